import pytest
import torch

from losstopo.errors import ConfigError
from losstopo.models import build_model, parameter_count
from losstopo.stacked import DatasetLoss, ParameterLayout, StackedModel


def test_fc_architecture_and_parameter_count():
    model = build_model("fc-3-32", (1, 28, 28), 10)
    assert parameter_count(model) == 784 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 10 + 10
    assert sum(isinstance(m, torch.nn.ReLU) for m in model) == 3


def test_unknown_model_names_the_known_forms():
    with pytest.raises(ConfigError, match="unknown model 'mlp-3'; known forms: fc-L-W"):
        build_model("mlp-3", (1, 28, 28), 10)


def test_layout_round_trip():
    model = build_model("fc-2-8", (1, 4, 4), 3)
    layout = ParameterLayout.of(model)
    theta = layout.flatten(model)
    assert theta.shape == (layout.dim,) == (parameter_count(model),)
    for name, value in layout.unflatten(theta).items():
        assert torch.equal(value, dict(model.named_parameters())[name])


def test_stacked_evaluation_equals_separate_modules():
    template = build_model("fc-4-16", (1, 28, 28), 10)
    stacked = StackedModel(template)
    thetas = stacked.init_thetas([11, 12, 13])
    assert not torch.allclose(thetas[0], thetas[1])  # distinct seeds, distinct initialisations
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(10, (64,))
    separate = []
    for theta in thetas:
        module = build_model("fc-4-16", (1, 28, 28), 10)
        torch.nn.utils.vector_to_parameters(theta, module.parameters())
        separate.append(module(x))
    separate = torch.stack(separate)
    assert torch.allclose(stacked.logits(thetas, x), separate, atol=1e-5)
    xs = torch.randn(3, 64, 1, 28, 28)  # each model its own batch
    per_model = stacked.logits_per_model(thetas, xs)
    for k, theta in enumerate(thetas):
        module = build_model("fc-4-16", (1, 28, 28), 10)
        torch.nn.utils.vector_to_parameters(theta, module.parameters())
        assert torch.allclose(per_model[k], module(xs[k]), atol=1e-5)
    losses = DatasetLoss(stacked, x, y, chunk_size=10, max_models=2)(thetas)
    expected = torch.stack([torch.nn.functional.cross_entropy(s, y) for s in separate])
    assert torch.allclose(losses, expected, atol=1e-5)


@pytest.mark.parametrize("name, shape", [("fc-2-16", (1, 28, 28)), ("cnn-1-4", (3, 32, 32))])
def test_loss_and_accuracy_in_one_pass_equal_the_two_separate_passes(name, shape):
    stacked = StackedModel(build_model(name, shape, 10))
    thetas = stacked.init_thetas([1, 2, 3])
    x, y = torch.randn(50, *shape), torch.randint(10, (50,))
    data = DatasetLoss(stacked, x, y, chunk_size=16, max_models=2)
    loss, accuracy = data.loss_and_accuracy(thetas)
    with torch.no_grad():  # as evaluations run (a conv net's may take another memory layout than a step's)
        assert torch.equal(loss, data(thetas))
        logits = stacked.logits(thetas, x)
    assert torch.equal(accuracy, (logits.argmax(-1) == y).float().mean(dim=1))
    assert torch.allclose(loss, torch.stack([torch.nn.functional.cross_entropy(z, y) for z in logits]), atol=1e-5)
    assert len(set(loss.tolist())) == 3  # three distinct models, not one repeated


@pytest.mark.parametrize("name", ["cnn-2-4", "cnn-1-4-bn"])
def test_nhwc_evaluations_on_cpu_are_the_nchw_function(name):
    """Evaluations without gradients of a looped conv net on CPU run NHWC: the same function to rounding, and
    steps (with gradients) stay NCHW."""
    stacked = StackedModel(build_model(name, (3, 32, 32), 10))
    thetas, x = stacked.init_thetas([4, 5]), torch.randn(16, 3, 32, 32)
    layouts = []
    first_conv = next(m for m in stacked.module.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda _, args: layouts.append(
        args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()))
    with torch.no_grad():
        evaluated = stacked.logits(thetas, x)
    stepped = stacked.logits(thetas.clone().requires_grad_(), x)
    assert layouts == [True, True, False, False]  # two models evaluated NHWC, then stepped NCHW
    assert torch.allclose(evaluated, stepped.detach(), rtol=1e-4, atol=1e-5)
    assert not StackedModel(build_model("lenet", (1, 28, 28), 10))._nhwc_evaluation(torch.randn(2, 1, 28, 28))


def test_stacked_gradients_equal_separate_gradients():
    stacked = StackedModel(build_model("fc-2-8", (1, 6, 6), 4))
    thetas = stacked.init_thetas([0, 1]).requires_grad_(True)
    x, y = torch.randn(16, 1, 6, 6), torch.randint(4, (16,))
    DatasetLoss(stacked, x, y)(thetas).sum().backward()
    for k in range(2):
        module = build_model("fc-2-8", (1, 6, 6), 4)
        torch.nn.utils.vector_to_parameters(thetas[k].detach(), module.parameters())
        torch.nn.functional.cross_entropy(module(x), y).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in module.parameters()])
        assert torch.allclose(thetas.grad[k], grad, atol=1e-6)


def test_minibatch_autocast_applies_to_the_steps_only():
    """bf16 minibatch losses (path steps) while the losses over the whole data stay fp32."""
    from losstopo.data import REGISTRY, synthetic_dataset

    data = synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(256, 8))
    stacked = StackedModel(build_model("fc-2-16", (1, 28, 28), 10))
    thetas = stacked.init_thetas([0, 1])
    plain = DatasetLoss(stacked, data.x_train, data.y_train, batch_size=64)
    mixed = DatasetLoss(stacked, data.x_train, data.y_train, batch_size=64, minibatch_autocast_dtype=torch.bfloat16)
    assert torch.equal(mixed(thetas), plain(thetas))
    step_plain = plain.minibatch(torch.Generator().manual_seed(3))(thetas)
    step_mixed = mixed.minibatch(torch.Generator().manual_seed(3))(thetas)
    assert not torch.equal(step_mixed, step_plain)  # bf16 matmuls: not the fp32 numbers ...
    assert torch.allclose(step_mixed, step_plain, rtol=0.02)  # ... but close to them


@pytest.mark.parametrize("amx, flags, expected", [(True, set(), torch.bfloat16), (False, {"avx512_bf16"}, torch.bfloat16),
                                                  (False, {"avx512f"}, None)])
def test_bf16_path_steps_on_cpu_only_where_it_has_amx_or_avx512_bf16(monkeypatch, amx, flags, expected):
    from losstopo import stacked

    from losstopo.paths_stage import path_loss
    from losstopo.config import PathConfig
    from losstopo.data import REGISTRY, synthetic_dataset

    monkeypatch.setattr(torch._C._cpu, "_init_amx", lambda: amx)
    monkeypatch.setattr(stacked, "cpu_flags", lambda: flags)
    data = synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(32, 8))
    stacked = StackedModel(build_model("fc-2-16", (1, 28, 28), 10))
    assert path_loss(stacked, data, PathConfig(mixed_precision=True)).minibatch_autocast_dtype == expected
    assert path_loss(stacked, data, PathConfig(mixed_precision=False)).minibatch_autocast_dtype is None


@pytest.mark.parametrize("name, shape", [("fc-1-8", (1, 5, 5)), ("fc-4-16", (3, 4, 4))])
def test_one_gemm_first_layer_equals_the_vmapped_layers(name, shape):
    """The fused shared-input MLP (auto) against vmap: same losses and gradients."""
    template = build_model(name, shape, 7)
    fused, vmapped = StackedModel(template), StackedModel(template, strategy="vmap")
    thetas = fused.init_thetas(list(range(5)))
    x, y = torch.randn(33, *shape), torch.randint(7, (33,))
    grads = []
    for stacked in (fused, vmapped):
        rows = thetas.clone().requires_grad_(True)
        losses = DatasetLoss(stacked, x, y, max_models=3)(rows)
        losses.sum().backward()
        grads.append((losses.detach(), rows.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    assert torch.allclose(fused.logits(thetas, x), vmapped.logits(thetas, x), atol=1e-6)


@pytest.mark.parametrize("name, shape", [("fc-1-8", (1, 5, 5)), ("fc-4-16", (3, 4, 4))])
def test_batched_per_model_mlp_equals_the_vmapped_layers(name, shape):
    """A batch per model (stacked training): the explicit batched products against vmap, values and gradients."""
    template = build_model(name, shape, 7)
    fused, vmapped = StackedModel(template), StackedModel(template, strategy="vmap")
    thetas = fused.init_thetas(list(range(4)))
    xs, y = torch.randn(4, 19, *shape), torch.randint(7, (4, 19))
    out = []
    for stacked in (fused, vmapped):
        rows = thetas.clone().requires_grad_(True)
        logits = stacked.logits_per_model(rows, xs)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        out.append((logits.detach(), rows.grad))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-6)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-6)


def test_gather_rows_is_advanced_indexing():
    from losstopo.train import gather_rows

    x = torch.randn(50, 3, 4, 4)
    idx = torch.randint(50, (6, 9))
    assert torch.equal(gather_rows(x, idx), x[idx])
    assert torch.equal(gather_rows(torch.arange(50), idx), torch.arange(50)[idx])


def test_only_linear_relu_stacks_take_the_one_gemm_path():
    from losstopo.stacked import mlp_linear_layers

    assert mlp_linear_layers(build_model("fc-2-8", (1, 4, 4), 3)) == [("1.weight", "1.bias"), ("3.weight", "3.bias"),
                                                                      ("5.weight", "5.bias")]
    nn = torch.nn
    assert mlp_linear_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))) is not None
    assert mlp_linear_layers(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))) is None
    assert mlp_linear_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU())) is None  # ends in a ReLU
    assert mlp_linear_layers(nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))) is None
    assert mlp_linear_layers(build_model("cnn-1-4", (3, 32, 32), 10)) is None


def test_augmented_minibatches_crop_and_flip_only_the_training_batches():
    from losstopo.data import REGISTRY, synthetic_dataset

    data = synthetic_dataset(REGISTRY["cifar10"], reason="test", sizes=(64, 8))
    stacked = StackedModel(build_model("cnn-1-4", (3, 32, 32), 10))
    thetas = stacked.init_thetas([0, 1])
    plain = DatasetLoss(stacked, data.x_train, data.y_train, batch_size=16)
    augmented = DatasetLoss(stacked, data.x_train, data.y_train, batch_size=16, augment=True)
    assert torch.equal(augmented(thetas), plain(thetas))  # whole-data losses: the images as they are

    def step(loss, seed):
        return loss.minibatch(torch.Generator().manual_seed(seed))(thetas)

    assert torch.equal(step(augmented, 5), step(augmented, 5))  # reproducible from the minibatch generator
    assert not torch.allclose(step(augmented, 5), step(plain, 5))  # same images, cropped and flipped
    # full-batch steps are augmented too (a plain full batch is the whole-data loss itself)
    full = DatasetLoss(stacked, data.x_train, data.y_train, augment=True)
    assert not torch.allclose(full.minibatch(torch.Generator().manual_seed(1))(thetas), plain(thetas))
