import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from losstopo.cli import main
from losstopo.config import load_params, resolve
from losstopo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_resolve_for_every_profile():
    for profile in ("paper", "ci", "cpu", "gpu-short"):
        params = load_params(REPO / "params.yaml", profile)
        assert params.profile == profile
    paper, ci = load_params(REPO / "params.yaml", "paper"), load_params(REPO / "params.yaml", "ci")
    assert not paper.data.allow_synthetic and ci.data.allow_synthetic
    # stand-ins only for the sets that are not available offline, never for one that should be there
    assert ci.data.allows_synthetic("svhn") and ci.data.allows_synthetic("cifar100")
    assert not ci.data.allows_synthetic("mnist") and not ci.data.allows_synthetic("cifar10")
    assert not load_params(REPO / "params.yaml", "cpu").data.allows_synthetic("svhn")
    assert paper.experiment("fc_depth").minima.n_minima == 10
    assert ci.experiment("fc_depth").minima.n_minima < 10
    assert ci.experiment("fc_depth").paths.alphas == paper.experiment("fc_depth").paths.alphas  # inherited


@pytest.mark.parametrize("raw, message", [
    ({"fc_depth": {"minima": {"batch_size": -16}}}, "fc_depth.minima.batch_size must be > 0, got -16"),
    ({"fc_depth": {"minima": {"batch_size": 0}}}, "fc_depth.minima.batch_size must be > 0"),
    ({"fc_depth": {"minima": {"eval_batch_size": 0}}}, "fc_depth.minima.eval_batch_size must be > 0"),
    ({"fc_depth": {"minima": {"train_subset": -5}}}, "fc_depth.minima.train_subset must be > 0, got -5"),
    ({"fc_depth": {"minima": {"train_subset": 0}}}, "fc_depth.minima.train_subset must be > 0"),
    ({"fc_depth": {"minima": {"cycle_epochs": 0}}}, "fc_depth.minima.cycle_epochs must be > 0"),
    ({"fc_depth": {"minima": {"min_improvement": 2.0}}}, "fc_depth.minima.min_improvement min_improvement must be in [0, 1)"),
    ({"fc_depth": {"paths": {"batch_size": 0}}}, "fc_depth.paths.batch_size must be > 0"),
    ({"fc_depth": {"depths": [2, 2]}}, "fc_depth.depths lists 2 more than once"),
    ({"fc_depth": {"depths": [2, 0]}}, "fc_depth.depths must all be >= 1"),
    ({"fc_depth": {"datasets": []}}, "fc_depth.datasets must not be empty"),
    ({"data": {"allow_synthetic": ["svhn", "mnsit"]}}, "data.allow_synthetic names unknown dataset(s) ['mnsit']"),
    ({"fc_depth": {"paths": {"method": "fastest"}}}, "fc_depth.paths.method must be one of"),
    ({"cnn_channels": {"models": ["cnn-1-32", "cnn-1-32"]}}, "cnn_channels.models lists 'cnn-1-32' more than once"),
    ({"permutation_barrier": {"mnist": {"widths": []}}}, "permutation_barrier.mnist.widths must not be empty"),
    ({"permutation_barrier": {"mnist": {"epochs": -1}}}, "permutation_barrier.mnist.epochs must be > 0"),
    ({"permutation_barrier": {"mnist": {"n_seeds": 0}}}, "permutation_barrier.mnist.n_seeds must be > 0"),
    ({"permutation_barrier": {"mnist": {"final_ratio": 1.5}}}, "permutation_barrier.mnist.final_ratio must lie"),
    ({"permutation_barrier": {"toy": {"hidden": 1}}}, "permutation_barrier.toy.hidden must be >= 2"),
    ({"permutation_barrier": {"mnist": {"final_max_iter": 100, "final_max_iter_by_width": {30: 200}}}},
     "permutation_barrier.mnist.final_max_iter_by_width names width 30, not in widths"),
    ({"permutation_barrier": {"mnist": {"final_max_iter": 100, "final_max_iter_by_width": {25: 1}}}},
     "permutation_barrier.mnist.final_max_iter_by_width budget of H = 25 must be an integer >= 2"),
    ({"permutation_barrier": {"mnist": {"final_max_iter": 100, "final_max_iter_by_width": {"25": 200}}}},
     "permutation_barrier.mnist.final_max_iter_by_width must be a mapping with int keys"),
    ({"permutation_barrier": {"mnist": {"final_max_iter": None, "final_max_iter_by_width": {25: 200}}}},
     "permutation_barrier.mnist.final_max_iter_by_width needs final_max_iter"),
    ({"runtime": {"device": "gpu0"}}, "runtime.device must be auto, cpu, cuda or cuda:N, got 'gpu0'"),
])
def test_absurd_sizes_and_lists_are_refused_before_any_compute(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve(raw)


@pytest.mark.parametrize("raw, message", [
    ({"fc_depth": {"minima": {"epochs": 3}}}, "unknown key fc_depth.minima.epochs; allowed:"),
    ({"fc_depth": {"paths": {"n_points": 2}}}, "fc_depth.paths.n_points must be >= 3"),
    ({"fc_depth": {"topology": {"method": "exact"}}}, "fc_depth.topology.method must be 'paper' or 'persistence'"),
    ({"profile": "fast"}, "unknown profile 'fast'; allowed: paper"),
    ({"fc_depth": {"width": "wide"}}, "fc_depth.width must be int"),
    ({"fc_depth": {"minima_by_dataset": {"mnist": {"epochs": 9}}}},
     "unknown key fc_depth.minima_by_dataset.mnist.epochs; allowed:"),
    ({"fc_depth": {"minima_by_dataset": {"mnist": {"max_epochs": 0}}}}, "fc_depth.minima_by_dataset.mnist.max_epochs"),
    ({"fc_depth": {"minima_by_dataset": ["mnist"]}}, "fc_depth.minima_by_dataset must be a mapping"),
])
def test_invalid_params_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(raw)


def test_a_stage_reads_its_own_experiments_settings_and_imports_no_other_experiment():
    """A stage's DVC deps list its own experiment module only (benchmarks.dvc_deps): loading its settings must not
    import (run) another experiment's module."""
    code = ("import sys; from losstopo.config import load_params\n"
            f"params = load_params({str(REPO / 'params.yaml')!r}, 'ci', only='fc_depth')\n"
            "assert list(params.experiments) == ['fc_depth'], params.experiments\n"
            "print(sorted(name for name in sys.modules if name.startswith('benchmarks.')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['benchmarks.fc_depth',", "'benchmarks.path_methods']"]
    with pytest.raises(ConfigError, match="unknown experiment 'fc_dpeth'; known: cnn_bn, cnn_channels, fc_depth"):
        resolve({}, only="fc_dpeth")


def test_a_profile_may_run_only_some_experiments(tmp_path, monkeypatch, capsys):
    raw = {"fc_depth": {}, "cnn_channels": {"models": ["cnn-1-4", "cnn-1-8"]},
           "profiles": {"small": {"experiments": ["fc_depth"], "fc_depth": {"replicates": 2}}}}
    params = resolve(raw, "small")
    assert list(params.experiments) == ["fc_depth"]
    with pytest.raises(ConfigError, match="not run at profile 'small'"):
        params.experiment("cnn_channels")
    with pytest.raises(ConfigError, match="experiments must be a non-empty list"):
        resolve({"fc_depth": {}, "profiles": {"bad": {"experiments": ["fc_dpeth"]}}}, "bad")
    from benchmarks import fc_depth
    from losstopo.minima_stage import replicate_config

    variants = fc_depth.variants(params.experiment("fc_depth"))
    assert [v.key for v in variants[:2]] == ["mnist-fc-2-32", "mnist-fc-2-32-r1"]
    seeds = [replicate_config(params.experiment("fc_depth").minima, v).seed for v in variants[:2]]
    assert seeds == [0, 1000]  # independent sets: seeds 0..9 and 1000..1009
    # a stage of a left-out experiment marks its outputs instead of failing
    import yaml
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, "profile": "small"}))
    monkeypatch.chdir(tmp_path)
    assert main(["stage", "cnn_channels", "paths"]) == 0
    assert "not run at profile 'small'" in capsys.readouterr().err
    assert (tmp_path / "artifacts/cnn_channels/paths/NOT_RUN.json").is_file()


def test_cli_prints_one_line_error_without_traceback(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("fc_depth:\n  minima:\n    n_minima: 1\n")
    assert main(["stage", "fc_depth", "minima", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("losstopo: error: params: fc_depth.minima.n_minima must be between 2 (a barcode needs two minima) "
                   "and 1000 (replicates' seeds are 1000 apart)")


@pytest.mark.slow  # runs stages (pipeline test)
def test_cli_missing_data_is_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  root: {tmp_path}\nfc_depth:\n  datasets: [mnist]\n")
    (tmp_path / "offline").mkdir()
    out = subprocess.run([sys.executable, "-m", "losstopo.cli", "stage", "fc_depth", "minima", "--params", str(params)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("losstopo: error")]
    assert len(lines) == 1 and "no offline copy of mnist" in lines[0] and "Traceback" not in out.stderr


def test_set_profile_rewrites_only_the_profile_line(tmp_path):
    from losstopo.config import set_profile

    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    params.write_text(text)
    set_profile(params, "ci")
    assert load_params(params).profile == "ci"
    changed = [(a, b) for a, b in zip(text.splitlines(), params.read_text().splitlines()) if a != b]
    assert len(changed) == 1 and changed[0][1].startswith("profile: ci")
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        set_profile(params, "huge")
    assert load_params(params).profile == "ci"


def test_minima_settings_per_dataset_override_only_that_dataset():
    config = resolve({"fc_depth": {"minima": {"max_epochs": 50, "lr_max": 0.002},
                                   "minima_by_dataset": {"fashion_mnist": {"max_epochs": 4000}}}}).experiment("fc_depth")
    assert config.minima_for("fashion_mnist").max_epochs == 4000
    assert config.minima_for("fashion_mnist").lr_max == 0.002  # the rest inherited from `minima`
    assert config.minima_for("mnist") == config.minima  # the other datasets keep their settings (and addresses)


def test_malformed_yaml_is_one_line_with_its_line_and_column(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("profile: ci\nfc_depth:\n  depths: [2, 3\n  width: 8\n")
    assert main(["config", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"losstopo: error: params file '{params}' is not valid YAML at line 4, column 8")


def test_a_cuda_device_on_a_machine_without_one_is_one_line(monkeypatch):
    import torch

    from losstopo.stage_frame import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="runtime.device is 'cuda:1', but this machine's torch sees no CUDA"):
        resolve_device("cuda:1")
    assert resolve_device("auto").type == "cpu"


def test_every_dvc_stage_waits_for_the_validation_of_all_params():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["validate"]["params"] == [{"params.yaml": None}]  # the whole file
    assert all("artifacts/validated.json" in stage["deps"] for name, stage in stages.items() if name != "validate")


def test_every_profile_override_of_a_stage_param_is_a_param_of_that_stage():
    """A profile that overrides a key a stage depends on (``fc_depth.depths`` -> ``profiles.ci.fc_depth.depths``)
    must be a DVC param of that stage too, or changing the override would not re-run it."""
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        listed = [key for key in stage.get("params", []) if isinstance(key, str)]
        for key in listed:
            for profile, overrides in raw["profiles"].items():
                node = overrides
                for part in key.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                override = f"profiles.{profile}.{key}"
                if node is not None and not any(override == k or override.startswith(k + ".") for k in listed):
                    missing.append(f"{name}: {override}")
    assert not missing, missing


def test_validate_checks_settings_and_every_dataset_and_writes_a_constant_marker(tmp_path, monkeypatch, capsys):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "cpu"
    raw["data"]["root"] = str((REPO / raw["data"]["root"]).resolve())
    raw["profiles"]["cpu"]["fc_depth"]["datasets"] = ["mnist", "fashion_mnsit"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--params", "params.yaml"]) == 2
    assert "unknown dataset 'fashion_mnsit'" in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "validated.json").exists()
    raw["profiles"]["cpu"]["fc_depth"]["datasets"] = ["mnist"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["validate", "--params", "params.yaml"]) == 0
    first = (tmp_path / "artifacts" / "validated.json").read_bytes()
    raw["profiles"]["cpu"]["fc_depth"]["replicates"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["validate", "--params", "params.yaml"]) == 0
    assert (tmp_path / "artifacts" / "validated.json").read_bytes() == first  # downstream stages not invalidated


def test_dvc_metrics_are_the_reports_numbers_and_the_plots_are_declared():
    import yaml

    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    metrics = {name: stage.get("metrics") for name, stage in pipeline["stages"].items() if stage.get("metrics")}
    assert metrics == {"report": [{"reports/${profile}/metrics.json": {"cache": False}}]}
    declared = [next(iter(p)) if isinstance(p, dict) else p for p in pipeline["plots"]]
    assert declared == ["TO-score per barcode", "reports/${profile}/figures"]


def test_report_metrics_hold_numbers_only(tmp_path):
    import json

    from losstopo.reporting import save_report_metrics
    from losstopo.io import save_json

    save_json({"svhn-fc-1-8": {"to_score": 0.25}}, tmp_path / "fc_depth" / "topology_metrics.json")
    save_json({"wall_s": 120.0}, tmp_path / "fc_depth" / "minima" / "stage.json")

    class Claim:
        verdict = "not converged"

    save_report_metrics(["fc_depth"], [Claim(), Claim()], tmp_path / "out", root=tmp_path)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["claims"]["not_converged"] == 2 and metrics["claims"]["supported"] == 0
    assert metrics["to_score"] == {"fc_depth/svhn-fc-1-8": 0.25} and metrics["stage_wall_min"] == 2.0

    def numbers(value):
        return all(numbers(v) for v in value.values()) if isinstance(value, dict) else isinstance(value, (int, float))

    assert numbers(metrics)
    assert json.loads((tmp_path / "out" / "to_scores.json").read_text())[0]["variant"] == "svhn-fc-1-8"


def test_params_share_no_yaml_anchors_so_dvc_exp_run_set_changes_one_value():
    import yaml

    text = (REPO / "params.yaml").read_text()
    events = list(yaml.parse(text))
    assert not [e for e in events if getattr(e, "anchor", None)]  # `dvc exp run -S a.b=1` would change c too


def test_a_change_the_active_profile_overrides_is_named_with_the_key_to_set(tmp_path, capsys):
    from losstopo.cli import run_validate, shadowed_changes

    committed = {"profile": "ci", "fc_depth": {"minima": {"n_minima": 10, "max_epochs": 60}},
                 "profiles": {"ci": {"fc_depth": {"minima": {"n_minima": 5}}}}}
    changed = copy.deepcopy(committed)
    changed["fc_depth"]["minima"]["n_minima"] = 7  # what `dvc exp run -S fc_depth.minima.n_minima=7` writes
    changed["fc_depth"]["minima"]["max_epochs"] = 80  # not overridden by ci: takes effect, no line
    (line,) = shadowed_changes(changed, committed)
    assert line.startswith("params: fc_depth.minima.n_minima was changed to 7, but profile 'ci' sets "
                           "profiles.ci.fc_depth.minima.n_minima = 5") and "-S profiles.ci.fc_depth.minima.n_minima" in line
    assert shadowed_changes(committed, committed) == []
    changed["profile"] = "paper"  # no profile overrides anything
    assert shadowed_changes(changed, committed) == []

    # through the validate stage of a git checkout: one warning line, and the stage still passes
    repo = tmp_path / "repo"
    repo.mkdir()
    params = repo / "params.yaml"
    text = (Path(__file__).parents[1] / "params.yaml").read_text().replace("profile: paper", "profile: ci", 1)
    params.write_text(text)
    for command in (["init", "-q"], ["add", "params.yaml"],
                    ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    raw = yaml.safe_load(text)
    raw["fc_depth"]["minima"]["n_minima"] = 7
    params.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    run_validate(str(params), None, tmp_path / "validated.json")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "profiles.ci.fc_depth.minima.n_minima" in warnings[0]


def test_validate_refuses_a_device_this_machine_lacks_and_a_relative_tolerance_of_one(tmp_path):
    import torch

    from losstopo.cli import run_validate

    text = (Path(__file__).parents[1] / "params.yaml").read_text().replace("profile: paper", "profile: ci", 1)
    raw = yaml.safe_load(text)
    raw["runtime"]["device"] = f"cuda:{torch.cuda.device_count() + 1}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"runtime.device is 'cuda:\d+', but this machine's torch sees"):
        run_validate(str(tmp_path / "params.yaml"), None, tmp_path / "validated.json")
    assert not (tmp_path / "validated.json").exists()
    raw["runtime"]["device"] = "cpu"
    raw["fc_depth"]["paths"]["converge_tol"] = 1.5
    with pytest.raises(ConfigError, match="fc_depth.paths.converge_tol must lie strictly between 0 and 1"):
        resolve(raw)
