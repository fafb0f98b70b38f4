"""Native dataset readers, manifests and `prepare` (lrcn.data.readers, lrcn.data.manifest)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from lrcn.data import manifest as manifests
from lrcn.data import readers
from lrcn.data.media import read_frames
from lrcn.errors import LrcnError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (../shared/data is not in this checkout)")
    return path


def split_counts(records: list[dict]) -> dict[str, int]:
    return dict(Counter(record["split"] for record in records))


def by_id(records: list[dict]) -> dict[str, dict]:
    return {record["id"]: record for record in records}


# ----------------------------------------------------------------------------- real files


def test_real_flickr8k_token_file_and_official_split() -> None:
    root = needs(DATA / "flickr8k")
    everything = readers.read_flickr8k(root, unlisted="train")
    assert len(everything) == 8091
    assert Counter(len(record["captions"]) for record in everything) == {5: 8091}
    assert "2258277193_586949ec62" not in by_id(everything)  # captioned, but not in the download
    official = readers.read_flickr8k(root)
    assert split_counts(official) == {"train": 6000, "val": 1000, "test": 1000}
    record = by_id(official)["1000268201_693b08cb0e"]
    assert record["path"] == str(root / "images" / "1000268201_693b08cb0e.jpg")
    assert record["captions"][0] == (
        "A child in a pink dress is climbing up a set of stairs in an entry way ."
    )
    readers.read_flickr8k(root, check_files=False)  # no stat of 8,000 absent images
    with pytest.raises(LrcnError, match="images/videos are missing"):
        readers.read_flickr8k(root, check_files=True)


def test_real_kaggle_captions_match_the_token_file() -> None:
    root = needs(DATA / "flickr8k")
    kaggle = by_id(readers.read_kaggle_captions(root, unlisted="train"))
    token = by_id(readers.read_flickr8k(root, unlisted="train"))
    assert kaggle.keys() == token.keys() and len(kaggle) == 8091
    assert all(kaggle[key]["captions"] == token[key]["captions"] for key in kaggle)
    assert sum(len(record["captions"]) for record in kaggle.values()) == 40455
    quoted = kaggle["1012212859_01547e3f17"]["captions"]
    assert "A dog shakes its head near the shore , a red ball next to it ." in quoted
    assert split_counts(readers.read_kaggle_captions(root)) == {
        "train": 6000,
        "val": 1000,
        "test": 1000,
    }


def test_real_karpathy_excerpt() -> None:
    root = needs(DATA / "karpathy")
    records = readers.read_karpathy(root)
    assert len(records) == 3 and all(len(record["captions"]) == 5 for record in records)
    assert records[0]["id"] == "2513260012_03d33305cf"
    assert records[0]["captions"][1] == "Black dog chasing brown dog through snow"


def test_real_flickr30k_token_excerpt() -> None:
    root = needs(DATA / "flickr30k")
    records = readers.read_flickr30k(root, token_file="results_20130124_EXCERPT_first10lines.token")
    assert [record["id"] for record in records] == ["1000092795", "10002456"]
    assert [len(record["captions"]) for record in records] == [5, 5]
    assert {record["split"] for record in records} == {"train"}  # no Karpathy split given


def test_real_coco_subset() -> None:
    root = needs(DATA / "coco")
    records = readers.read_coco(root)
    assert len(records) == 200 and split_counts(records) == {"val": 200}
    assert sum(len(record["captions"]) for record in records) == 1001
    first = by_id(records)["400"]
    assert first["path"] == str(root / "val2014" / "COCO_val2014_000000000400.jpg")
    assert readers.read_coco(root, split="test")[0]["split"] == "test"


def test_real_msvd_clips() -> None:
    root = needs(DATA / "msvd")
    records = by_id(readers.read_msvd(root))
    assert sorted(records) == ["-vg3vR86fu0_1_6", "0bSz70pYAP0_5_15"]
    plane = records["0bSz70pYAP0_5_15"]
    assert plane["split"] == "train"  # vid66
    assert len(plane["captions"]) == 52 and plane["captions"][1] == "a plane is flying in the air."
    assert len(records["-vg3vR86fu0_1_6"]["captions"]) == 54
    assert read_frames(plane["path"], 11).shape == (11, 1080, 1920, 3)


def test_real_msrvtt_1k_a_csv() -> None:
    root = needs(DATA / "msrvtt")
    records = readers.read_msrvtt(root)
    assert len(records) == 1000 and split_counts(records) == {"test": 1000}
    first = by_id(records)["video9770"]
    assert first["captions"] == ["a person is connecting something to system"]
    assert first["path"] == str(root / "video9770.mp4")


@pytest.mark.parametrize(
    ("split", "train", "test"), [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)]
)
def test_real_ucf101_splits(split: int, train: int, test: int) -> None:
    root = needs(DATA / "ucf101")
    records = readers.read_ucf101(root, split=split)
    assert split_counts(records) == {"train": train, "test": test}
    assert len({record["label"] for record in records}) == 101
    assert train + test == 13320
    clip = by_id(records)["v_Basketball_g01_c01"]
    assert clip["label"] == 7 and clip["label_name"] == "Basketball"
    assert clip["split"] == ("test" if split == 1 else "train")  # test groups: 1-7, 8-14, 15-21
    assert Path(clip["path"]).is_file()  # flat layout: the shipped clip sits in root


def test_real_ucf101_group_holdout_never_straddles() -> None:
    root = needs(DATA / "ucf101")
    records = readers.read_ucf101(root, val_fraction=0.2, seed=3)
    counts = split_counts(records)
    assert counts["test"] == 3783 and counts["train"] + counts["val"] == 9537
    groups: dict[tuple[str, str], set[str]] = {}
    for record in records:
        group = (record["label_name"], record["id"].rsplit("_", 2)[1])
        groups.setdefault(group, set()).add(record["split"])
    assert all(len(splits) == 1 for splits in groups.values())
    val_classes = {record["label_name"] for record in records if record["split"] == "val"}
    assert len(val_classes) == 101
    again = readers.read_ucf101(root, val_fraction=0.2, seed=3)
    assert [r["split"] for r in again] == [r["split"] for r in records]


def test_real_prepare_ucf101_writes_manifest_and_labels(tmp_path: Path) -> None:
    root = needs(DATA / "ucf101")
    counts = manifests.prepare("ucf101", root, tmp_path, split="2", val_fraction="0.1")
    assert counts["test"] == 3734 and counts["train"] + counts["val"] == 9586
    labels = manifests.read_labels(tmp_path)
    assert len(labels) == 101 and labels[0] == "ApplyEyeMakeup" and labels[-1] == "YoYo"
    test = manifests.read_manifest(tmp_path, "test")
    assert len(test) == 3734 and all(labels[r["label"]] == r["label_name"] for r in test)


# ----------------------------------------------------------------------------- bad input


def test_caption_line_without_tab(tmp_path: Path) -> None:
    (tmp_path / "Flickr8k.token.txt").write_text(
        "a.jpg#0\tA dog runs .\na.jpg#1 A dog sits .\n", encoding="utf-8"
    )
    with pytest.raises(LrcnError, match=r"Flickr8k.token.txt line 2 has no tab"):
        readers.read_flickr8k(tmp_path)


def test_non_utf8_caption_file(tmp_path: Path) -> None:
    (tmp_path / "Flickr8k.token.txt").write_bytes(b"a.jpg#0\tA dog runs .\na.jpg#1\tA caf\xe9 .\n")
    with pytest.raises(LrcnError, match=r"Flickr8k.token.txt line 2 is not valid UTF-8"):
        readers.read_flickr8k(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n  \r\n"])
def test_empty_caption_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "captions.txt").write_bytes(content)
    with pytest.raises(LrcnError, match="captions.txt is empty"):
        readers.read_kaggle_captions(tmp_path)


def test_missing_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(LrcnError, match="no Flickr8k.token.txt .* token_file=PATH"):
        readers.read_flickr8k(tmp_path)
    with pytest.raises(LrcnError, match="is not a folder"):
        readers.read_flickr8k(tmp_path / "nowhere")
    with pytest.raises(LrcnError, match="nope.txt was not found"):
        readers.read_flickr8k(tmp_path, token_file="nope.txt")


def test_token_file_with_bom_crlf_and_numbered_name(tmp_path: Path) -> None:
    (tmp_path / "Flickr8k.token.txt").write_bytes(
        b"\xef\xbb\xbfa.jpg#0\tA dog runs .  \r\na.jpg.1#1\tA dog\t sits .\r\n\r\nb.jpg#0\tCat\r\n"
    )
    records = by_id(readers.read_flickr8k(tmp_path))
    assert records["a"]["captions"] == ["A dog runs .", "A dog sits ."]
    assert records["b"]["captions"] == ["Cat"]
    assert records["a"]["path"] == str(tmp_path / "a.jpg")


def test_flickr8k_split_lists_partial_or_present(tmp_path: Path) -> None:
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\tx\nb.jpg#0\ty\nc.jpg#0\tz\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\n")
    with pytest.raises(LrcnError, match="split lists for val, test are missing"):
        readers.read_flickr8k(tmp_path)
    (tmp_path / "Flickr_8k.devImages.txt").write_text("b.jpg\r\n")
    (tmp_path / "Flickr_8k.testImages.txt").write_text("\n")
    with pytest.raises(LrcnError, match="testImages.txt is empty"):
        readers.read_flickr8k(tmp_path)
    (tmp_path / "Flickr_8k.testImages.txt").write_text("d.jpg\n")
    assert split_counts(readers.read_flickr8k(tmp_path)) == {"train": 1, "val": 1}
    assert split_counts(readers.read_flickr8k(tmp_path, unlisted="train")) == {"train": 2, "val": 1}


def test_kaggle_csv_commas_quotes_and_header(tmp_path: Path) -> None:
    with open(tmp_path / "captions.txt", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerow(["a.jpg", 'A dog , wet , says "woof" .'])
        f.write("a.jpg,An unquoted, comma\n")
        f.write("b.jpg\n")
    with pytest.raises(LrcnError, match="captions.txt line 4 has no comma"):
        readers.read_kaggle_captions(tmp_path)
    lines = (tmp_path / "captions.txt").read_text().splitlines()
    (tmp_path / "captions.txt").write_text("\n".join(lines[:3]) + "\n")
    (record,) = readers.read_kaggle_captions(tmp_path)
    assert record["captions"] == ['A dog , wet , says "woof" .', "An unquoted, comma"]
    (tmp_path / "captions.txt").write_text("a.jpg,A dog .\n")
    with pytest.raises(LrcnError, match="line 1 .* not the 'image,caption' header"):
        readers.read_kaggle_captions(tmp_path)


def write_ucf_lists(root: Path, train: str, test: str) -> None:
    (root / "classInd.txt").write_bytes(b"1 Archery\r\n2 Basketball\r\n")
    (root / "trainlist01.txt").write_bytes(train.encode())
    (root / "testlist01.txt").write_bytes(test.encode())


def test_ucf101_unknown_class_and_wrong_label(tmp_path: Path) -> None:
    write_ucf_lists(
        tmp_path,
        "Archery/v_Archery_g08_c01.avi 1\r\n",
        "Archery/v_Archery_g01_c01.avi\r\nFencing/v_Fencing_g01_c01.avi\r\n",
    )
    with pytest.raises(LrcnError, match=r"testlist01.txt line 2 names class 'Fencing'"):
        readers.read_ucf101(tmp_path)
    write_ucf_lists(tmp_path, "Archery/v_Archery_g08_c01.avi 2\r\n", "")
    with pytest.raises(LrcnError, match=r"trainlist01.txt line 1 gives label 2"):
        readers.read_ucf101(tmp_path)
    with pytest.raises(LrcnError, match="split=4 does not exist"):
        readers.read_ucf101(tmp_path, split=4)


def test_ucf101_nested_layout(tmp_path: Path) -> None:
    write_ucf_lists(
        tmp_path,
        "Archery/v_Archery_g08_c01.avi 1\nBasketball/v_Basketball_g08_c01.avi 2\n",
        "Basketball/v_Basketball_g01_c01.avi\n",
    )
    (tmp_path / "UCF-101" / "Basketball").mkdir(parents=True)
    records = by_id(readers.read_ucf101(tmp_path))
    expected = tmp_path / "UCF-101" / "Basketball" / "v_Basketball_g01_c01.avi"
    assert records["v_Basketball_g01_c01"]["path"] == str(expected)
    assert records["v_Archery_g08_c01"]["label"] == 0


# ----------------------------------------------------------------------------- synthetic layouts


def test_karpathy_coco_style_with_filepath_and_restval(tmp_path: Path) -> None:
    images = [
        {"filepath": "val2014", "filename": "x.jpg", "cocoid": 7, "split": "restval",
         "sentences": [{"raw": " A cat .\n"}, {"raw": ""}]},
        {"filepath": "val2014", "filename": "y.jpg", "cocoid": 8, "split": "test",
         "sentences": [{"raw": "A dog ."}]},
    ]  # fmt: skip
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    records = by_id(readers.read_karpathy(tmp_path))
    assert records["7"] == {
        "id": "7",
        "path": str(tmp_path / "val2014" / "x.jpg"),
        "split": "train",
        "captions": ["A cat ."],
    }
    assert records["8"]["split"] == "test"
    (tmp_path / "dataset_coco.json").write_text('{"images": [')
    with pytest.raises(LrcnError, match="dataset_coco.json line 1 is not valid JSON"):
        readers.read_karpathy(tmp_path)


def test_coco_drops_uncaptioned_images_and_refuses_ambiguity(tmp_path: Path) -> None:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [{"image_id": 1, "id": 9, "caption": "A  man\nrides ."}],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2017.json").write_text(json.dumps(data))
    (record,) = readers.read_coco(tmp_path)
    assert record["captions"] == ["A man rides ."] and record["split"] == "train"
    assert record["path"] == str(tmp_path / "train2017" / "a.jpg")
    (tmp_path / "annotations" / "captions_train2014.json").write_text(json.dumps(data))
    with pytest.raises(LrcnError, match="would be the train split"):
        readers.read_coco(tmp_path)


def test_msvd_vid_naming_csv_and_videos(tmp_path: Path) -> None:
    (tmp_path / "youtube_mapping.txt").write_bytes(
        b"abc_1_5 vid1\r\nxyz-_2_9 vid1250\r\nqqq_0_3 vid1400"
    )
    with open(tmp_path / "MSR Video Description Corpus.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["VideoID", "Start", "End", "WorkerID", "Source", "AnnotationTime", "Language",
             "Description"]
        )  # fmt: skip
        writer.writerow(["abc", "1", "5", "1", "clean", "9", "English", 'A man, "happy", runs.'])
        writer.writerow(["abc", "1", "5", "1", "clean", "9", "German", "Ein Mann rennt."])
        writer.writerow(["xyz-", "2", "9", "1", "clean", "9", "English", "A cat."])
        writer.writerow(["qqq", "0", "3", "1", "clean", "9", "English", "Rain."])
    clips = tmp_path / "YouTubeClips"
    clips.mkdir()
    (clips / "abc_1_5.avi").write_bytes(b"")
    (tmp_path / "vid1250").mkdir()  # frames named by vid number
    (tmp_path / "vid1400.txt").write_text("Heavy rain.\nIt rains.\n")  # captions by vid number
    (tmp_path / "vid1400.mp4").write_bytes(b"")
    records = by_id(readers.read_msvd(tmp_path))
    assert records["abc_1_5"]["captions"] == ['A man, "happy", runs.']
    assert records["abc_1_5"]["path"] == str(clips / "abc_1_5.avi")
    assert records["abc_1_5"]["split"] == "train"
    assert records["xyz-_2_9"]["split"] == "val"
    assert records["xyz-_2_9"]["path"] == str(tmp_path / "vid1250")
    assert records["qqq_0_3"]["captions"] == ["Heavy rain.", "It rains."]  # .txt wins over CSV
    assert records["qqq_0_3"]["split"] == "test"


def test_msvd_without_mapping_cannot_split(tmp_path: Path) -> None:
    (tmp_path / "abc_1_5.txt").write_text("A man runs.\n")
    (tmp_path / "abc_1_5").mkdir()
    with pytest.raises(LrcnError, match="youtube_mapping.txt"):
        readers.read_msvd(tmp_path)


def test_msrvtt_json_official_and_1k_a(tmp_path: Path) -> None:
    info = {
        "videos": [
            {"video_id": "video0", "split": "train"},
            {"video_id": "video1", "split": "validate"},
            {"video_id": "video2", "split": "test"},
            {"video_id": "video3", "split": "test"},
        ],
        "sentences": [
            {"video_id": f"video{i}", "caption": f"caption {i} {j}", "sen_id": 2 * i + j}
            for i in range(4)
            for j in range(2)
        ],
    }
    (tmp_path / "train_val_videodatainfo.json").write_text(json.dumps(info))
    (tmp_path / "TrainValVideo").mkdir()
    official = by_id(readers.read_msrvtt(tmp_path))
    assert {k: r["split"] for k, r in official.items()} == {
        "video0": "train",
        "video1": "val",
        "video2": "test",
        "video3": "test",
    }
    assert official["video1"]["path"] == str(tmp_path / "TrainValVideo" / "video1.mp4")
    assert official["video2"]["captions"] == ["caption 2 0", "caption 2 1"]
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key;vid_key;video_id;sentence\r\nret0;msr3;video3;a; semicolon\r\n"
    )
    one_k = by_id(readers.read_msrvtt(tmp_path, split_scheme="1k-A"))
    assert split_counts(list(one_k.values())) == {"train": 3, "test": 1}
    assert one_k["video3"]["captions"] == ["caption 3 0", "caption 3 1"]  # json refs preferred
    (tmp_path / "train_val_videodatainfo.json").unlink()
    (only_csv,) = readers.read_msrvtt(tmp_path)
    assert only_csv["captions"] == ["a; semicolon"] and only_csv["split"] == "test"


# ----------------------------------------------------------------------------- manifests


def caption_records(tmp_path: Path) -> list[dict]:
    return [
        {"id": "a", "path": str(tmp_path / "a.jpg"), "split": "train", "captions": ["x", "y"]},
        {"id": "b", "path": str(tmp_path / "b.jpg"), "split": "test", "captions": ["z é"]},
    ]


def test_manifest_round_trip_and_stale_splits(tmp_path: Path) -> None:
    out = tmp_path / "manifest"
    (out).mkdir()
    (out / "val.jsonl").write_text('{"stale": true}\n')
    counts = manifests.write_manifest(caption_records(tmp_path), out)
    assert counts == {"train": 1, "val": 0, "test": 1}
    assert manifests.read_manifest(out, "train") == caption_records(tmp_path)[:1]
    assert manifests.read_manifest(out / "test.jsonl") == caption_records(tmp_path)[1:]
    assert manifests.read_manifest(out, "val") == []
    assert not (out / "labels.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]


def test_manifest_activity_labels(tmp_path: Path) -> None:
    records = [
        {"id": "v1", "path": "/v1.avi", "split": "train", "label": 1, "label_name": "b"},
        {"id": "v2", "path": "/v2.avi", "split": "val", "label": 0, "label_name": "a"},
    ]
    manifests.write_manifest(records, tmp_path)
    assert manifests.read_labels(tmp_path) == ["a", "b"]
    manifests.write_manifest(records[:1], tmp_path, labels=["a", "b", "c"])
    assert manifests.read_labels(tmp_path) == ["a", "b", "c"]
    with pytest.raises(LrcnError, match="not 0..N-1"):
        manifests.write_manifest(records[:1], tmp_path)
    with pytest.raises(LrcnError, match="label 1 but there are 1 classes"):
        manifests.write_manifest(records, tmp_path, labels=["a"])


def test_manifest_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(LrcnError, match="train.jsonl does not exist; run `lrcn prepare"):
        manifests.read_manifest(tmp_path, "train")
    good = json.dumps(caption_records(tmp_path)[0])
    (tmp_path / "train.jsonl").write_text(f"{good}\n\n{{not json\n")
    with pytest.raises(LrcnError, match=r"train.jsonl line 3 is not valid JSON"):
        manifests.read_manifest(tmp_path, "train")
    (tmp_path / "train.jsonl").write_text(f'{good}\n{{"id": "a", "path": "p", "split": "dev"}}\n')
    with pytest.raises(LrcnError, match=r"train.jsonl line 2 has split 'dev'"):
        manifests.read_manifest(tmp_path, "train")
    with pytest.raises(LrcnError, match="split 'dev'"):
        manifests.write_manifest(
            [{"id": "a", "path": "p", "split": "dev", "captions": []}], tmp_path
        )


def test_prepare_options_and_registry(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "Flickr8k.token.txt").write_text("a.jpg#0\tA dog .\n")
    counts = manifests.prepare("flickr8k", root, tmp_path / "out", check_files="false")
    assert counts == {"train": 1, "val": 0, "test": 0}
    assert manifests.read_manifest(tmp_path / "out", "train")[0]["captions"] == ["A dog ."]
    with pytest.raises(LrcnError, match="images/videos are missing"):
        manifests.prepare("flickr8k", root, tmp_path / "out", check_files="true")
    with pytest.raises(LrcnError, match="has no option 'splt'; valid options: token_file"):
        manifests.prepare("flickr8k", root, tmp_path / "out", splt="1")
    with pytest.raises(
        LrcnError, match="unknown dataset 'flickr9k'; choose one of karpathy, coco, flickr8k"
    ):
        manifests.prepare("flickr9k", root, tmp_path / "out")
    with pytest.raises(LrcnError, match="check_files. must be true or false, got 'maybe'"):
        manifests.prepare("flickr8k", root, tmp_path / "out", check_files="maybe")
    # the built-in readers (a test file may have registered more)
    assert set(readers.available_readers()) >= {
        "karpathy", "coco", "flickr8k", "flickr30k", "kaggle_captions", "msvd", "msrvtt", "ucf101",
    }  # fmt: skip


def test_prepare_ucf101_without_a_val_split_says_how_to_make_one(tmp_path: Path, capsys) -> None:
    """UCF101's official splits have no val: prepare says what that means for training and which
    option holds groups out (issue 26: "val: 0" passed silently into training)."""
    from lrcn.cli import main

    root = needs(DATA / "ucf101")
    assert main(["prepare", "ucf101", "--root", str(root), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "val: 0" in out
    assert "no val split, so training will run without validation or early stopping" in out
    assert "`val_fraction=0.1`" in out
    assert main(["prepare", "ucf101", "--root", str(root), "--out", str(tmp_path / "v"), "val_fraction=0.1"]) == 0  # fmt: skip
    assert "no val split" not in capsys.readouterr().out
