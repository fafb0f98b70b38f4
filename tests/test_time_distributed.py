"""TimeDistributed folds time into the batch with shared weights; the ActivityClassifier on it.

Every numeric comparison is one forward computed two ways (another batch size or wrapping, so
perhaps other kernels) on untrained values of order one: PyTorch's default float32 tolerance (rtol
1.3e-6, atol 1e-5) is then about ten ulps of each value, and rounding holds it on any CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrcn.models.classifier import ActivityClassifier, build_seed_cnn, build_seed_model
from lrcn.models.time_distributed import TimeDistributed


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )


def test_folds_time_into_batch_and_keeps_any_trailing_shape():
    frames = torch.randn(2, 5, 3, 8, 6)

    assert TimeDistributed(nn.Conv2d(3, 4, 3))(frames).shape == (2, 5, 4, 6, 4)
    assert TimeDistributed(nn.Flatten())(frames).shape == (2, 5, 3 * 8 * 6)
    assert TimeDistributed(nn.Linear(7, 2))(torch.randn(2, 5, 7)).shape == (2, 5, 2)


def test_applies_the_same_module_to_every_step():
    frames = torch.randn(3, 4, 3, 8, 8)
    cnn = small_cnn().eval()

    outputs = TimeDistributed(cnn)(frames)

    for step in range(4):
        torch.testing.assert_close(outputs[:, step], cnn(frames[:, step]))


def test_whole_and_per_layer_wrapping_agree_with_shared_weights():
    frames = torch.randn(2, 5, 3, 8, 8)
    cnn = small_cnn()  # train mode: BatchNorm normalises over all B*T frames either way
    whole = TimeDistributed(cnn)
    per_layer = nn.Sequential(*(TimeDistributed(layer) for layer in cnn))

    torch.testing.assert_close(whole(frames), per_layer(frames))
    assert {id(p) for p in whole.parameters()} == {id(p) for p in per_layer.parameters()}


def test_rejects_inputs_without_a_time_axis():
    with pytest.raises(ValueError, match=r"shape \(4, 7\).*at least 3 dimensions"):
        TimeDistributed(nn.Linear(7, 2))(torch.randn(4, 7))


def test_rejects_a_module_that_changes_the_batch_size():
    with pytest.raises(ValueError, match="keep the leading"):
        TimeDistributed(nn.Flatten(0))(torch.randn(2, 3, 4))


def test_contiguous_input_is_not_copied_and_non_contiguous_input_works():
    frames = torch.randn(2, 5, 3, 4, 4)
    assert TimeDistributed(nn.Identity())(frames).data_ptr() == frames.data_ptr()

    channels_last = torch.randn(2, 5, 4, 4, 3).permute(0, 1, 4, 2, 3)  # (B, T, C, H, W) view
    assert not channels_last.is_contiguous()
    torch.testing.assert_close(
        TimeDistributed(nn.Flatten())(channels_last),
        TimeDistributed(nn.Flatten())(channels_last.contiguous()),
    )


def test_tuple_outputs_are_unfolded_one_by_one():
    class Split(nn.Module):
        def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return inputs[:, :2], inputs[:, 2:].sum(dim=1)

    first, second = TimeDistributed(Split())(torch.randn(2, 3, 5))

    assert first.shape == (2, 3, 2) and second.shape == (2, 3)


def test_gradients_reach_the_shared_weights_from_every_step():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    frames = torch.zeros(1, 3, 1, 2, 2)
    frames[0, 2] = 1.0  # only the last step carries signal

    TimeDistributed(conv)(frames)[:, 2].sum().backward()

    assert conv.weight.grad is not None and conv.weight.grad.item() == pytest.approx(4.0)


# ActivityClassifier ------------------------------------------------------------------------


def classifier(num_outputs: int, prediction: str, wrap: str = "whole") -> ActivityClassifier:
    cnn, feature_dim = build_seed_cnn(in_channels=3, filters=2, height=8, width=8)
    torch.manual_seed(0)
    return ActivityClassifier(
        cnn, feature_dim, num_outputs, hidden_dim=6, prediction=prediction, wrap=wrap
    ).eval()


@pytest.mark.parametrize("num_outputs, num_classes", [(1, 2), (3, 3)])
@pytest.mark.parametrize("prediction", ["last", "mean"])
def test_classifier_shapes_and_probabilities(num_outputs, num_classes, prediction):
    model = classifier(num_outputs, prediction)
    frames = torch.rand(4, 5, 3, 8, 8)

    logits = model(frames)
    probabilities = model.predict_proba(frames)

    assert logits.shape == (4, num_outputs)
    assert model.step_logits(frames).shape == (4, 5, num_outputs)
    assert probabilities.shape == (4, num_classes) == (4, model.num_classes)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(4))


def test_binary_probabilities_are_one_minus_p_and_p():
    model = classifier(1, "last")
    frames = torch.rand(2, 5, 3, 8, 8)

    p = torch.sigmoid(model(frames))  # (B, 1)

    torch.testing.assert_close(model.predict_proba(frames), torch.cat([1 - p, p], dim=1))


def test_mean_prediction_averages_step_logits_in_forward_and_probabilities_in_predict_proba():
    model = classifier(3, "mean")
    frames = torch.rand(2, 5, 3, 8, 8)
    step_logits = model.step_logits(frames)  # (B, T, 3)

    torch.testing.assert_close(model(frames), step_logits.mean(dim=1))
    torch.testing.assert_close(
        model.predict_proba(frames), torch.softmax(step_logits, dim=-1).mean(dim=1)
    )


def test_last_prediction_uses_the_last_step():
    model = classifier(3, "last")
    frames = torch.rand(2, 5, 3, 8, 8)

    torch.testing.assert_close(model(frames), model.step_logits(frames)[:, -1])


@pytest.mark.parametrize("num_outputs", [1, 3])
@pytest.mark.parametrize("prediction", ["last", "mean"])
def test_loss_matches_the_criterion_and_trains_every_parameter(num_outputs, prediction):
    model = classifier(num_outputs, prediction).train()
    batch = {"frames": torch.rand(4, 5, 3, 8, 8), "label": torch.tensor([0, 1, 1, 0])}
    logits = model(batch["frames"]) if prediction == "last" else model.step_logits(batch["frames"])
    labels = batch["label"] if prediction == "last" else batch["label"][:, None].expand(4, 5)
    if num_outputs == 1:
        expected = nn.functional.binary_cross_entropy_with_logits(
            logits.squeeze(-1), labels.float()
        )
    else:
        expected = nn.functional.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1))

    loss = model.loss(batch)
    loss.backward()

    torch.testing.assert_close(loss, expected)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_per_layer_classifier_equals_whole_classifier_with_the_same_weights():
    whole = classifier(3, "mean", wrap="whole")
    per_layer = classifier(3, "mean", wrap="per_layer")
    with torch.no_grad():
        for source, target in zip(whole.parameters(), per_layer.parameters(), strict=True):
            target.copy_(source)
    frames = torch.rand(2, 5, 3, 8, 8)

    torch.testing.assert_close(whole(frames), per_layer(frames))


def test_predict_video_averages_strided_clips_and_covers_the_end():
    model = classifier(3, "mean")
    video = torch.rand(21, 3, 8, 8)

    # Clips start at 0, 4 (stride 4, length 8), then 8 and 12; 13 ends at the last frame.
    starts = [0, 4, 8, 12, 13]
    expected = torch.stack([model.predict_proba(video[s : s + 8][None])[0] for s in starts])

    result = model.predict_video(video, clip_len=8, stride=4, batch_size=2)

    assert result.shape == (3,)
    torch.testing.assert_close(result, expected.mean(dim=0))


def test_predict_video_shorter_than_a_clip_is_one_clip():
    model = classifier(1, "last")
    video = torch.rand(5, 3, 8, 8)

    torch.testing.assert_close(
        model.predict_video(video, clip_len=16, stride=8), model.predict_proba(video[None])[0]
    )


def test_predict_video_rejects_a_batch():
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        classifier(1, "last").predict_video(torch.rand(2, 5, 3, 8, 8))


def test_wrong_feature_dim_is_explained():
    cnn, feature_dim = build_seed_cnn(in_channels=3, height=8, width=8)
    model = ActivityClassifier(cnn, feature_dim + 1, 2, hidden_dim=4)

    with pytest.raises(ValueError, match="check feature_dim"):
        model(torch.rand(1, 2, 3, 8, 8))


def test_seed_model_keeps_keras_same_output_size_for_even_kernels():
    model = build_seed_model(10, 10)

    features = model.frame_encoder(torch.rand(2, 5, 1, 10, 10))

    assert features.shape == (2, 5, 2 * 5 * 5) and model.lstm.input_size == 50
