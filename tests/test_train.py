import dataclasses
import math

import pytest
import torch

from losstopo.config import MinimaConfig
from losstopo.data import REGISTRY, synthetic_dataset
from losstopo.errors import TrainingDiverged
from losstopo.models import build_model
from losstopo.stacked import StackedModel
from losstopo.train import _stop_if_diverged, train_minima


def _small_data():
    return synthetic_dataset(REGISTRY["mnist"], reason="test", sizes=(512, 128))


def test_training_lowers_loss_with_distinct_minima():
    data = _small_data()
    stacked = StackedModel(build_model("fc-2-16", (1, 28, 28), 10))
    result = train_minima(stacked, data, MinimaConfig(n_minima=3, max_epochs=6, patience=10, batch_size=64),
                          progress=False)
    first_epoch = result.history[0]["train_loss"]
    assert all(final < first for final, first in zip(result.train_loss, first_epoch))
    assert result.train_acc[0] > 0.5
    assert len({round(t, 6) for t in result.thetas[:, 0].tolist()}) == 3
    assert result.seeds == [0, 1, 2]


def test_patience_rule_stops_early():
    data = _small_data()
    stacked = StackedModel(build_model("fc-1-8", (1, 28, 28), 10))
    cfg = MinimaConfig(n_minima=2, max_epochs=100, patience=1, min_improvement=0.5, batch_size=64)
    result = train_minima(stacked, data, cfg, progress=False)
    assert len(result.history) < 100 and all(result.converged)


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    data = _small_data()
    cfg = MinimaConfig(n_minima=2, max_epochs=4, patience=10, batch_size=64)
    full = train_minima(StackedModel(build_model("fc-1-8", (1, 28, 28), 10)), data, cfg, progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_two(epoch, record):
        if epoch == 2:
            raise Interrupt

    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        train_minima(StackedModel(build_model("fc-1-8", (1, 28, 28), 10)), data, cfg, checkpoint=checkpoint,
                     on_epoch=stop_after_two, progress=False)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2  # tensors and plain data only: a safe load
    resumed = train_minima(StackedModel(build_model("fc-1-8", (1, 28, 28), 10)), data, cfg,
                           checkpoint=checkpoint, progress=False)
    assert len(resumed.history) == 4
    assert torch.allclose(resumed.thetas, full.thetas, atol=1e-6)


def test_divergence_stops_with_a_clear_message():
    data = _small_data()
    data.x_train[7, 0, 3, 3] = math.nan  # one corrupt pixel poisons every model that sees it
    cfg = MinimaConfig(n_minima=2, max_epochs=3, batch_size=64)
    with pytest.raises(TrainingDiverged, match=r"minimum 0 \(seed 0\) diverged at epoch 1: training loss nan.*lr_max"):
        train_minima(StackedModel(build_model("fc-2-16", (1, 28, 28), 10)), data, cfg, progress=False)


def test_a_finite_but_huge_loss_is_divergence_not_a_minimum():
    cfg = MinimaConfig(n_minima=2, lr_max=1e4, lr_base=1e4)
    with pytest.raises(TrainingDiverged, match=r"minimum 1 \(seed 1\) diverged at epoch 5: training loss 3.6e\+16 "
                                               r"\(above 23 = 10.0 x ln\(10 classes\).*lr_max \(now 10000.0\)"):
        _stop_if_diverged(torch.tensor([0.1, 3.6e16]), [0, 1], 4, cfg, 10)
    _stop_if_diverged(torch.tensor([0.1, 3.5]), [0, 1], 4, cfg, 10)  # a tiny net's first epoch on noise: not divergence


def test_sgd_with_piecewise_schedule_runs_fixed_epochs_and_logs_the_schedule():
    data = _small_data()
    cfg = MinimaConfig(n_minima=2, max_epochs=4, patience=None, batch_size=128, optimizer="sgd", momentum=0.9,
                       schedule="piecewise", m1=1, m2=3, lr_max=0.05, lr_base=0.001)
    result = train_minima(StackedModel(build_model("fc-1-8", (1, 28, 28), 10)), data, cfg, progress=False)
    assert len(result.history) == 4 and result.epochs == [4, 4]
    # a fixed budget's convergence is measured (last 20% of epochs), not assumed
    losses = [record["train_loss"] for record in result.history]
    assert result.converged == [abs(b - a) / b < 0.01 for a, b in zip(losses[2], losses[3])]
    # 4 batches per epoch: the last batch of epoch 1 (index 3) is at lr_max, epoch 4's last (15) at lr_min.
    assert result.history[0]["lr"] == pytest.approx(0.05)
    assert result.history[3]["lr"] == pytest.approx(0.001)
    assert result.history[1]["lr"] == pytest.approx(0.05 + (0.001 - 0.05) * (7 - 4) / 8)


def test_augmented_training_runs_and_differs_from_plain():
    data = synthetic_dataset(REGISTRY["cifar10"], reason="test", sizes=(128, 32))
    stacked = StackedModel(build_model("cnn-1-4", (3, 32, 32), 10))
    plain = train_minima(stacked, data, MinimaConfig(n_minima=2, max_epochs=1, batch_size=32), progress=False)
    augmented = train_minima(stacked, data, MinimaConfig(n_minima=2, max_epochs=1, batch_size=32, augment=True),
                             progress=False)
    assert not torch.allclose(plain.thetas, augmented.thetas)
    assert all(math.isfinite(v) for v in augmented.train_loss)


def test_fixed_budget_convergence_is_measured_on_the_last_fifth_of_the_epochs():
    from losstopo.train import fixed_budget_converged

    history = [{"train_loss": [1.0 / e, 1.0]} for e in range(1, 11)]  # model 0 still falls, model 1 flat
    assert fixed_budget_converged(history, 2) == [False, True]
    assert fixed_budget_converged([], 2) == [False, False]


def test_the_minima_optimiser_is_the_fused_adam_and_takes_the_reference_adams_steps():
    """make_optimizer's Adam (one fused pass) updates each of K minima as torch's reference Adam does, per minimum,
    to float32 tolerance, with weight decay and the learning rate changed between steps as the schedule does."""
    from losstopo.train import make_optimizer

    config = MinimaConfig(weight_decay=1e-3)
    torch.manual_seed(0)
    start = torch.randn(3, 50)
    fused = torch.nn.Parameter(start.clone())
    optimizer = make_optimizer(fused, config)
    assert optimizer.defaults["fused"]
    reference = [torch.nn.Parameter(row.clone()) for row in start]
    plain = [torch.optim.Adam([p], lr=config.lr_base, weight_decay=1e-3, foreach=False) for p in reference]
    for step in range(20):
        lr = config.lr_base * (1 + step)
        grads = torch.randn(3, 50)
        for group in [*optimizer.param_groups, *(g for o in plain for g in o.param_groups)]:
            group["lr"] = lr
        fused.grad = grads.clone()
        optimizer.step()
        for p, o, g in zip(reference, plain, grads):
            p.grad = g.clone()
            o.step()
    assert torch.allclose(fused.detach(), torch.stack([p.detach() for p in reference]), rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused.detach(), start)  # the steps moved the parameters


def _one_epoch(config: MinimaConfig, spy_dtypes: list | None = None) -> torch.Tensor:
    """params (K, d) after one train_epoch of fc-2-16 from seeds 0, 1 at make_optimizer's rate; ``spy_dtypes`` collects
    the dtype of every step's logits."""
    from losstopo.train import make_optimizer, train_epoch

    data = _small_data()
    stacked = StackedModel(build_model("fc-2-16", (1, 28, 28), 10))
    if spy_dtypes is not None:
        logits_per_model = stacked.logits_per_model
        stacked.logits_per_model = lambda *args: _recorded(logits_per_model(*args), spy_dtypes)
    params = torch.nn.Parameter(stacked.init_thetas([0, 1]))
    order = torch.argsort(torch.rand(2, len(data.y_train), generator=torch.Generator().manual_seed(0)), dim=1)
    train_epoch(stacked, params, make_optimizer(params, config), data, order, config, lambda b: config.lr_base)
    return params.detach()


def _recorded(logits: torch.Tensor, dtypes: list) -> torch.Tensor:
    dtypes.append(logits.dtype)
    return logits


def _fp32_epoch_as_before(config: MinimaConfig) -> torch.Tensor:
    """The oracle: _one_epoch's steps as train_epoch took them before mixed_precision_cpu (no autocast on a CPU)."""
    from losstopo.train import gather_rows, make_optimizer
    from losstopo.stacked import cross_entropy_per_model

    data = _small_data()
    stacked = StackedModel(build_model("fc-2-16", (1, 28, 28), 10))
    params = torch.nn.Parameter(stacked.init_thetas([0, 1]))
    optimizer = make_optimizer(params, config)
    order = torch.argsort(torch.rand(2, len(data.y_train), generator=torch.Generator().manual_seed(0)), dim=1)
    for b in range(len(data.y_train) // config.batch_size):
        idx = order[:, b * config.batch_size:(b + 1) * config.batch_size]
        logits = stacked.logits_per_model(params, gather_rows(data.x_train, idx))
        optimizer.zero_grad(set_to_none=True)
        cross_entropy_per_model(logits, data.y_train[idx]).sum().backward()
        optimizer.step()
    return params.detach()


BF16_CONFIG = MinimaConfig(n_minima=2, batch_size=64, mixed_precision_cpu=True)


def test_cpu_bf16_training_steps_run_in_bf16_and_change_the_minima_slightly(monkeypatch):
    monkeypatch.setattr("losstopo.train.fast_bf16", lambda device: True)
    dtypes = []
    bf16 = _one_epoch(BF16_CONFIG, dtypes)
    assert dtypes == [torch.bfloat16] * 8  # 512 images / 64 a batch
    fp32 = _fp32_epoch_as_before(BF16_CONFIG)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert torch.allclose(bf16, fp32, atol=2e-3)  # 8 Adam steps of ~lr_base = 1e-4 each (measured: 5e-4 apart)


def test_training_steps_without_the_cpu_option_are_the_fp32_steps_bit_for_bit(monkeypatch):
    monkeypatch.setattr("losstopo.train.fast_bf16", lambda device: True)  # a fast-bf16 CPU: only the option decides
    dtypes = []
    default = _one_epoch(MinimaConfig(n_minima=2, batch_size=64), dtypes)  # mixed_precision (CUDA's) is on
    assert dtypes == [torch.float32] * 8
    assert torch.equal(default, _fp32_epoch_as_before(BF16_CONFIG))


def test_the_cpu_bf16_option_is_a_no_op_without_fast_bf16(monkeypatch):
    monkeypatch.setattr("losstopo.train.fast_bf16", lambda device: False)
    assert torch.equal(_one_epoch(BF16_CONFIG), _fp32_epoch_as_before(BF16_CONFIG))


def test_bf16_training_evaluates_its_epochs_and_minima_in_fp32(monkeypatch):
    """The patience rule's training loss and the reported losses and accuracies come from fp32 logits."""
    monkeypatch.setattr("losstopo.train.fast_bf16", lambda device: True)
    stacked = StackedModel(build_model("fc-1-8", (1, 28, 28), 10))
    step_dtypes, evaluation_dtypes = [], []
    logits, logits_per_model = stacked.logits, stacked.logits_per_model
    stacked.logits = lambda *args: _recorded(logits(*args), evaluation_dtypes)
    stacked.logits_per_model = lambda *args: _recorded(logits_per_model(*args), step_dtypes)
    result = train_minima(stacked, _small_data(), dataclasses.replace(BF16_CONFIG, max_epochs=2), progress=False)
    assert set(step_dtypes) == {torch.bfloat16}
    assert len(evaluation_dtypes) == 2 + 2 and set(evaluation_dtypes) == {torch.float32}  # 2 epochs; train, test
    assert all(math.isfinite(v) for v in result.train_loss + result.test_loss)
