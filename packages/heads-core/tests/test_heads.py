import pytest
import torch
from heads_core import AnomalyHead, ClassificationHead, RegressionHead, TaskType, get_head_for_task


@pytest.mark.parametrize("batch", [1, 4])
def test_classification_head_shape(batch):
    head = ClassificationHead(16, 5)
    assert head(torch.randn(batch, 16, 7, 7)).shape == (batch, 5)


def test_head_submodules_and_default_dropout():
    head = ClassificationHead(8, 2)
    assert [name for name, _ in head.named_children()] == ["pool", "flatten", "dropout", "fc"]
    assert head.dropout.p == 0.2
    assert isinstance(head.pool, torch.nn.AdaptiveAvgPool2d)


def test_anomaly_head_single_image():
    assert AnomalyHead(8)(torch.randn(1, 8, 3, 3)).shape == (1, 1)


@pytest.mark.parametrize("batch", [1, 4])
def test_regression_head_three_outputs(batch):
    assert RegressionHead(8, num_outputs=3)(torch.randn(batch, 8, 2, 2)).shape == (batch, 3)


def test_head_pools_height_and_width():
    head = ClassificationHead(4, 2, dropout=0.0).eval()
    x = torch.randn(2, 4, 5, 6)
    expected = head.fc(x.mean(dim=(2, 3)))
    torch.testing.assert_close(head(x), expected)


def test_head_rejects_token_input():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ClassificationHead(4, 2)(torch.randn(2, 10, 4))


def test_task_type_has_seven_tasks():
    assert {t.value for t in TaskType} == {
        "classification",
        "anomaly_detection",
        "regression",
        "detection",
        "oriented_detection",
        "instance_segmentation",
        "segmentation",
    }


def test_head_for_standalone_tasks():
    assert get_head_for_task(TaskType.CLASSIFICATION) == "classification"
    assert get_head_for_task("anomaly_detection") == "anomaly"
    assert get_head_for_task(TaskType.REGRESSION) == "regression"


@pytest.mark.parametrize("task", ["detection", "segmentation", "instance_segmentation", "oriented_detection"])
def test_head_for_embedded_task_is_clear_error(task):
    with pytest.raises(ValueError, match="no standalone head"):
        get_head_for_task(task)


def test_head_for_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'colorization'"):
        get_head_for_task("colorization")
