"""CNN architectures of Tables 8-10, stacked convolutions, and BatchNorm along paths."""

import pytest
import torch

from losstopo.config import MinimaConfig
from losstopo.data import REGISTRY, synthetic_dataset
from losstopo.models import build_model, parameter_count
from losstopo.stacked import DatasetLoss, StackedModel
from losstopo.train import train_minima


@pytest.mark.parametrize("name, count", [("cnn-1-32", 7562), ("cnn-2-64", 117578)])
def test_parameter_counts_match_the_paper(name, count):
    assert parameter_count(build_model(name, (3, 32, 32), 10)) == count


def test_every_cnn_ends_at_four_by_four_before_the_classifier():
    for depth in (1, 2, 3):
        model = build_model(f"cnn-{depth}-16-bn", (3, 32, 32), 10)
        features = model[:-1](torch.zeros(2, 3, 32, 32))
        assert features.shape == (2, 16 * 16)
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model) == depth
        assert sum(isinstance(m, torch.nn.Conv2d) for m in model) == depth


def test_stacked_convolutions_equal_separate_modules():
    template = build_model("cnn-2-8", (3, 32, 32), 10)
    stacked = StackedModel(template)
    thetas = stacked.init_thetas([1, 2, 3])
    x = torch.randn(16, 3, 32, 32)
    for k, theta in enumerate(thetas):
        module = build_model("cnn-2-8", (3, 32, 32), 10)
        torch.nn.utils.vector_to_parameters(theta, module.parameters())
        assert torch.allclose(stacked.logits(thetas, x)[k], module(x), atol=1e-5)


def test_stacked_batchnorm_uses_batch_statistics_of_each_parameter_vector():
    stacked = StackedModel(build_model("cnn-1-8-bn", (3, 32, 32), 10))
    assert stacked.has_batch_norm
    thetas = stacked.init_thetas([0, 1])
    x = torch.randn(32, 3, 32, 32)
    for k, theta in enumerate(thetas):
        module = build_model("cnn-1-8-bn", (3, 32, 32), 10).train()  # train mode: batch statistics
        torch.nn.utils.vector_to_parameters(theta, module.parameters())
        assert torch.allclose(stacked.logits(thetas, x)[k], module(x), atol=1e-4)


def _module_with_population_stats(name, theta, x):
    """nn.Module holding theta, with BN running statistics measured for these weights (update_bn)."""
    module = build_model(name, (3, 32, 32), 10)
    torch.nn.utils.vector_to_parameters(theta, module.parameters())
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the pass
    module.train()
    with torch.no_grad():
        module(x)
    return module.eval()


def test_batchnorm_statistics_along_a_path_matter():
    name = "cnn-1-8-bn"
    data = synthetic_dataset(REGISTRY["cifar10"], reason="test", sizes=(1024, 256))
    stacked = StackedModel(build_model(name, (3, 32, 32), 10))
    cfg = MinimaConfig(n_minima=2, max_epochs=4, patience=10, batch_size=64, lr_max=1e-2)
    ends = train_minima(stacked, data, cfg, progress=False).thetas
    mid = ends.mean(dim=0)
    x, y = data.x_train, data.y_train
    recomputed = DatasetLoss(stacked, x, y, chunk_size=len(y))(mid[None])[0]

    # The independent reference: update_bn for the midpoint's own weights, then eval mode.
    reference = _module_with_population_stats(name, mid, x)
    with torch.no_grad():
        reference_loss = torch.nn.functional.cross_entropy(reference(x), y)
    assert recomputed == pytest.approx(reference_loss.item(), rel=2e-3)

    # What a naive evaluation does: the midpoint's weights with endpoint A's running statistics.
    naive = _module_with_population_stats(name, ends[0], x)
    torch.nn.utils.vector_to_parameters(mid, naive.parameters())
    with torch.no_grad():
        naive_loss = torch.nn.functional.cross_entropy(naive(x), y)
    assert abs(naive_loss.item() - recomputed.item()) > 0.05 * recomputed.item()


@pytest.mark.parametrize("name, count", [("resnet-t11", 232138), ("resnet-t11-code", 195210)])
def test_resnet_table_11_parameter_counts(name, count):
    model = build_model(name, (3, 32, 32), 10)
    assert parameter_count(model) == count
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_stacked_resnet_equals_separate_modules_in_batch_statistics_mode():
    stacked = StackedModel(build_model("resnet-t11-code", (3, 32, 32), 10))
    thetas = stacked.init_thetas([4, 5])
    x = torch.randn(8, 3, 32, 32)
    for k, theta in enumerate(thetas):
        module = build_model("resnet-t11-code", (3, 32, 32), 10).train()
        torch.nn.utils.vector_to_parameters(theta, module.parameters())
        assert torch.allclose(stacked.logits(thetas, x)[k], module(x), atol=1e-4)


def test_wide_resnet_and_lenet_parameter_counts():
    assert parameter_count(build_model("wrn-16-10", (3, 32, 32), 100)) == 17_174_324  # "about 17.1M" (section 4)
    assert parameter_count(build_model("lenet", (1, 28, 28), 10)) == 44_426  # Table 12 by hand
    narrow = build_model("wrn-16-1", (3, 32, 32), 100)
    assert narrow(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(Exception, match="D = 6n"):
        build_model("wrn-15-2", (3, 32, 32), 100)


def test_channels_last_evaluation_is_the_same_function():
    plain = StackedModel(build_model("wrn-10-1", (3, 32, 32), 10))
    nhwc = StackedModel(build_model("wrn-10-1", (3, 32, 32), 10), channels_last=True)
    assert nhwc.strategy == "loop"
    thetas = plain.init_thetas([0, 1])
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(plain.logits(thetas, x), nhwc.logits(thetas, x), atol=1e-4)
    grads = []
    for model in (plain, nhwc):
        leaf = thetas.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.logits(leaf, x).square().sum(), leaf)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-3, rtol=1e-3)
