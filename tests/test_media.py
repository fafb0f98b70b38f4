"""Image loading, video decoding, frame folders, frame sampling and tensors (lrcn.data.media)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrcn.data import media
from lrcn.errors import LrcnError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UCF_CLIP = DATA / "ucf101" / "v_Basketball_g01_c01.avi"
MSVD_CLIP = DATA / "msvd" / "0bSz70pYAP0_5_15"


def needs(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (../shared/data is not in this checkout)")


def write_video(path: Path, num_frames: int, codec: str = "libx264", size=(64, 48)) -> Path:
    """Frame i is flat grey at level 10 * i, so a decoded frame tells which one it was."""
    av = pytest.importorskip("av")
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            pixels = np.full((height, width, 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_levels(frames: np.ndarray) -> list[int]:
    """Which synthetic frame each decoded frame is (grey level / 10, rounded)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    return [round(float(frame.mean()) / 10) for frame in flat]


# ----------------------------------------------------------------------------- sampling


def test_uniform_indices_spread_distinct_and_ordered() -> None:
    assert media.uniform_indices(141, 16) == [
        4, 13, 22, 30, 39, 48, 57, 66, 74, 83, 92, 101, 110, 118, 127, 136,
    ]  # fmt: skip
    for n in range(1, 60):
        for t in range(1, n + 1):
            picks = media.uniform_indices(n, t)
            assert len(picks) == t and picks == sorted(set(picks))
            assert 0 <= picks[0] and picks[-1] < n
    assert media.uniform_indices(10, 10) == list(range(10))


def test_uniform_indices_pads_short_input_with_last_frame() -> None:
    assert media.uniform_indices(3, 6) == [0, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError):
        media.uniform_indices(0, 4)


def test_clip_starts() -> None:
    # 0, 8, ..., 120 stop 5 frames short of the end: a last clip ends at frame 140
    assert media.clip_starts(141, 16, 8) == [*range(0, 126, 8), 125]
    assert media.clip_starts(20, 16, 8) == [0, 4]
    assert media.clip_starts(32, 16, 8) == [0, 8, 16]
    assert media.clip_starts(16, 16, 8) == [0]
    assert media.clip_starts(5, 16, 8) == [0]


# ----------------------------------------------------------------------------- videos


def test_read_video_uniform_picks_the_right_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "ramp.mp4", 20)
    frames = media.read_video(video, 5)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    assert frame_levels(frames) == media.uniform_indices(20, 5)


def test_read_video_clips(tmp_path: Path) -> None:
    video = write_video(tmp_path / "ramp.avi", 20, codec="mpeg4")
    clips = media.read_video(video, 0, sampling="clips", clip_len=8, stride=4)
    assert clips.shape == (4, 8, 48, 64, 3)
    assert frame_levels(clips[1]) == list(range(4, 12))
    two = media.read_video(video, 0, sampling="clips", clip_len=8, stride=4, max_clips=2)
    assert two.shape[0] == 2


def test_short_video_repeats_last_frame_or_refuses(tmp_path: Path) -> None:
    video = write_video(tmp_path / "short.mp4", 4)
    frames = media.read_video(video, 7)
    assert frame_levels(frames) == [0, 1, 2, 3, 3, 3, 3]
    clips = media.read_video(video, 0, sampling="clips", clip_len=6)
    assert clips.shape[:2] == (1, 6) and frame_levels(clips) == [0, 1, 2, 3, 3, 3]
    with pytest.raises(LrcnError, match="short.mp4 has 4 frames but 7"):
        media.read_video(video, 7, pad="error")


def test_header_overstating_by_a_frame_is_tolerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = write_video(tmp_path / "ramp.mp4", 20)
    monkeypatch.setattr(media, "_count_frames", lambda av, path: 21)
    assert frame_levels(media.read_video(video, 21)) == list(range(20)) + [19]
    monkeypatch.setattr(media, "_count_frames", lambda av, path: 30)
    with pytest.raises(LrcnError, match="ramp.mp4 ended after 20 of the 30 frames"):
        media.read_video(video, 21)


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 20])
def test_empty_or_non_video_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(LrcnError, match="bad.mp4"):
        media.read_video(bad, 4)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_truncated_mp4(tmp_path: Path, fraction: float) -> None:
    data = write_video(tmp_path / "whole.mp4", 25).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(LrcnError, match="cut.mp4"):
        media.read_video(cut, 8)


def test_truncated_real_avi_is_detected(tmp_path: Path) -> None:
    # A cut AVI opens and decodes cleanly up to the cut; only the frame count betrays it.
    needs(UCF_CLIP)
    cut = tmp_path / "cut.avi"
    data = UCF_CLIP.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(LrcnError, match=r"cut.avi ended after \d+ of the 141 frames"):
        media.read_video(cut, 16)


def test_missing_video_and_missing_pyav(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LrcnError, match="nothere.avi"):
        media.read_frames(tmp_path / "nothere.avi", 4)
    with pytest.raises(LrcnError, match="nothere.avi not found"):
        media.read_video(tmp_path / "nothere.avi", 4)
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(LrcnError, match="pip install av"):
        media.read_video(tmp_path / "nothere.avi", 4)


def test_bad_sampling_arguments(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", 4)
    with pytest.raises(LrcnError, match="sampling"):
        media.read_video(video, 4, sampling="random")
    with pytest.raises(LrcnError, match="padding"):
        media.read_video(video, 4, pad="zeros")


def test_real_ucf101_clip() -> None:
    needs(UCF_CLIP)
    everything = media.read_video(UCF_CLIP, 141)
    assert everything.shape == (141, 240, 320, 3)
    frames = media.read_video(UCF_CLIP, 16)
    assert frames.shape == (16, 240, 320, 3)
    np.testing.assert_array_equal(frames, everything[media.uniform_indices(141, 16)])
    clips = media.read_video(UCF_CLIP, 16, sampling="clips", clip_len=16, stride=8)
    starts = media.clip_starts(141, 16, 8)
    assert clips.shape == (len(starts), 16, 240, 320, 3) == (17, 16, 240, 320, 3)
    np.testing.assert_array_equal(clips[3], everything[starts[3] : starts[3] + 16])
    np.testing.assert_array_equal(clips[-1], everything[125:])
    tensor = media.frames_to_tensor(frames, 112)
    assert tensor.shape == (16, 3, 112, 112) and tensor.dtype == torch.float32
    assert media.frames_to_tensor(clips[0], (128, 171)).shape == (16, 3, 128, 171)
    with pytest.raises(LrcnError, match="141 frames but 200"):
        media.read_video(UCF_CLIP, 200, pad="error")


# ----------------------------------------------------------------------------- frame folders


def test_frame_folder_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(1, 13):  # lexical order would put image10..12 before image2
        Image.new("RGB", (8, 6), (10 * i,) * 3).save(folder / f"clipimage{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    names = [p.name for p in media.list_frame_files(folder)]
    assert names == [f"clipimage{i}.png" for i in range(1, 13)]
    frames = media.read_frames(folder, 12)
    assert frames.shape == (12, 6, 8, 3)
    assert frame_levels(frames) == list(range(1, 13))
    padded = media.read_frame_folder(folder, 15)
    assert frame_levels(padded)[-4:] == [12, 12, 12, 12]
    clips = media.read_frame_folder(folder, 0, sampling="clips", clip_len=4, stride=4)
    assert clips.shape == (3, 4, 6, 8, 3)


def test_frame_folder_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LrcnError, match="empty holds no image files"):
        media.read_frames(empty, 4)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (8, 6)).save(mixed / "f1.png")
    Image.new("RGB", (6, 8)).save(mixed / "f2.png")
    with pytest.raises(LrcnError, match="f2.png is 6x8"):
        media.read_frame_folder(mixed, 2)
    broken = tmp_path / "broken"
    broken.mkdir()
    Image.new("RGB", (8, 6)).save(broken / "f1.png")
    (broken / "f2.jpg").write_bytes(b"")
    with pytest.raises(LrcnError, match="f2.jpg"):
        media.read_frame_folder(broken, 2)


def test_real_msvd_frames_in_natural_order() -> None:
    needs(MSVD_CLIP)
    names = [p.name for p in media.list_frame_files(MSVD_CLIP)]
    assert names == [f"0bSz70pYAP0_5_15image{i}.jpg" for i in range(1, 12)]
    frames = media.read_frames(MSVD_CLIP, 3)
    assert frames.shape == (3, 1080, 1920, 3)
    expected = np.asarray(Image.open(MSVD_CLIP / "0bSz70pYAP0_5_15image10.jpg").convert("RGB"))
    np.testing.assert_array_equal(frames[2], expected)  # uniform_indices(11, 3)[2] == 9


# ----------------------------------------------------------------------------- images


def test_load_image_modes(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 255, 0, 255))
    rgba.putpixel((2, 0), (200, 100, 50, 128))
    rgba.save(tmp_path / "rgba.png")
    img = media.load_image(tmp_path / "rgba.png")
    assert img.mode == "RGB" and img.size == (4, 2)
    assert img.getpixel((0, 0)) == (0, 0, 0)  # transparent: black, not the stored red
    assert img.getpixel((1, 0)) == (0, 255, 0)
    assert img.getpixel((2, 0)) == pytest.approx((100, 50, 25), abs=1)

    Image.new("LA", (2, 2), (200, 255)).save(tmp_path / "la.png")
    Image.new("L", (2, 2), 77).save(tmp_path / "grey.png")
    Image.new("1", (2, 2), 1).save(tmp_path / "bw.png")
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    transparent = palette.copy()
    transparent.info["transparency"] = 1
    transparent.save(tmp_path / "palette_t.png", transparency=1)
    expected = {
        "la.png": (200, 200, 200),
        "grey.png": (77, 77, 77),
        "bw.png": (255, 255, 255),
        "palette.png": (10, 20, 30),
        "palette_t.png": (0, 0, 0),
    }
    for name, colour in expected.items():
        img = media.load_image(tmp_path / name)
        assert img.mode == "RGB" and img.getpixel((0, 0)) == colour, name
    red = media.load_image(tmp_path / "cmyk.jpg").getpixel((0, 0))
    assert red[0] > 200 and red[1] < 40 and red[2] < 40


def test_load_image_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # opens as I;16 (or I on old Pillow)
    img = media.load_image(tmp_path / "deep.png")
    assert [img.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255,) * 3]
    wide = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    wide.save(tmp_path / "wide.tif")  # opens as mode I (32-bit integers)
    img = media.load_image(tmp_path / "wide.tif")
    assert [img.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_load_image_applies_exif_orientation(tmp_path: Path) -> None:
    img = Image.new("RGB", (4, 2), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert media.load_image(tmp_path / "rotated.jpg").size == (2, 4)


def _smooth_photo(width: int, height: int) -> Image.Image:
    """A photo-like image: smooth colour gradients, as a JPEG holds them."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([np.sin(7 * x) * np.cos(5 * y), np.cos(9 * y), np.sin(4 * (x + y))], axis=-1)
    return Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8))


def test_large_jpeg_decodes_reduced_but_never_below_the_target(tmp_path: Path) -> None:
    _smooth_photo(1000, 760).save(tmp_path / "big.jpg", quality=92)
    _smooth_photo(1000, 760).save(tmp_path / "big.png")

    reduced = media.load_image(tmp_path / "big.jpg", min_size=224)
    full = media.load_image(tmp_path / "big.jpg")
    assert full.size == (1000, 760)
    assert reduced.size == (500, 380)  # 1/2 scale: 1/4 (250x190) would go below 224
    # (height, width) = (100, 60): both sides must stay >= 100, so 1/4, not 1/8 (125x95)
    assert media.load_image(tmp_path / "big.jpg", min_size=(100, 60)).size == (250, 190)
    assert media.load_image(tmp_path / "big.png", min_size=224).size == (1000, 760)  # not JPEG

    # what the CNN sees differs by a fraction of a grey level
    a = media.image_to_tensor(full, 224, mean=(0, 0, 0), std=(1, 1, 1))
    b = media.image_to_tensor(reduced, 224, mean=(0, 0, 0), std=(1, 1, 1))
    assert (a - b).abs().mean().item() * 255 < 1.0


def test_reduced_decoding_keeps_exif_orientation(tmp_path: Path) -> None:
    img = _smooth_photo(800, 480)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated: 480 wide, 800 high
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert media.load_image(tmp_path / "rotated.jpg", min_size=200).size == (240, 400)


def test_load_image_problems(tmp_path: Path) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, not an image")
    whole = tmp_path / "whole.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole, quality=95)
    (tmp_path / "cut.jpg").write_bytes(whole.read_bytes()[:2000])
    Image.fromarray(noise).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:3000])
    (tmp_path / "folder.jpg").mkdir()
    cases = {
        "zero.jpg": "empty",
        "text.png": "not an image",
        "cut.jpg": "truncated",
        "cut.png": "truncated",
        "folder.jpg": "is a folder",
        "missing.jpg": "does not exist",
    }
    for name, why in cases.items():
        with pytest.raises(LrcnError, match=why) as caught:
            media.load_image(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value)


def test_real_flickr_photo() -> None:
    photo = DATA / "flickr8k" / "images" / "1000268201_693b08cb0e.jpg"
    needs(photo)
    img = media.load_image(photo)
    assert img.mode == "RGB" and min(img.size) > 100


# ----------------------------------------------------------------------------- tensors


def test_image_to_tensor_normalises_and_resizes() -> None:
    img = Image.new("RGB", (40, 30), (255, 128, 0))
    tensor = media.image_to_tensor(img, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    expected = torch.tensor([1.0, (128 / 255 - 0.5) / 0.25, -0.5])
    torch.testing.assert_close(tensor.mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)
    assert media.image_to_tensor(img, (20, 10)).shape == (3, 20, 10)


def test_frames_to_tensor_matches_per_image() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    batch = media.frames_to_tensor(frames, (24, 32))
    assert batch.shape == (5, 3, 24, 32) and batch.is_contiguous()
    single = media.image_to_tensor(Image.fromarray(frames[3]), (24, 32))
    torch.testing.assert_close(batch[3], single)
    # The uint8 resize stays within one grey level of a float (antialiased, bilinear) resize.
    reference = torch.nn.functional.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float(),
        size=(24, 32),
        mode="bilinear",
        antialias=True,
    )
    mean = torch.tensor(media.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(media.IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(batch, (reference / 255 - mean) / std, atol=1 / 255 / 0.224, rtol=0)
    with pytest.raises(ValueError):
        media.frames_to_tensor(frames[0], 8)
