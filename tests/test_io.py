"""Atomic writes: complete files with the usual permissions; a killed write's leftovers are found and removed."""

import os
import stat

import pytest

from losstopo.io import remove_orphans, save_json, save_torch


def test_outputs_get_the_permissions_of_any_new_file(tmp_path):
    mask = os.umask(0o022)
    try:
        save_json({"a": 1}, tmp_path / "x.json")
        save_torch({"b": 2}, tmp_path / "y.pt")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644  # mkstemp alone leaves 0600
    assert stat.S_IMODE((tmp_path / "y.pt").stat().st_mode) == 0o644


def test_a_killed_writes_temporary_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "variant").mkdir()
    orphan = tmp_path / "variant" / ".minima.pt.k3j_x.tmp"
    orphan.write_bytes(b"half")
    kept = [tmp_path / "variant" / "minima.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in kept:
        path.write_bytes(b"x")
    assert remove_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and all(path.exists() for path in kept)
    assert remove_orphans(tmp_path / "missing") == []


def test_an_unreadable_cache_entry_or_checkpoint_is_discarded_with_one_line(tmp_path, capsys):
    import torch

    from losstopo.executor import JobCache
    from losstopo.io import load_or_discard

    cache = JobCache(tmp_path / "cache")
    cache.put("abc", {"x": torch.ones(3)})
    assert cache.get("abc")[0]
    entry = tmp_path / "cache" / "abc.pt"
    entry.write_bytes(entry.read_bytes()[:40])  # a write cut short (or a disk full)
    assert cache.get("abc") == (False, None) and not entry.exists()
    assert "discarded unreadable job-cache entry" in capsys.readouterr().out
    junk = tmp_path / "checkpoint.pt"
    junk.write_bytes(os.urandom(300))
    assert load_or_discard(junk, "epoch checkpoint") is None and not junk.exists()
    assert load_or_discard(tmp_path / "missing.pt", "epoch checkpoint") is None


def test_a_variant_is_skipped_only_if_its_weights_are_readable_and_match(tmp_path):
    from losstopo.minima_stage import _finished_minima
    from losstopo.io import save_json

    import torch
    save_json({"address": "a1", "summary": {"ok": 1}}, tmp_path / "minima.json")
    save_torch({"thetas": torch.zeros(2, 3), "address": "a1"}, tmp_path / "minima.pt")
    assert _finished_minima(tmp_path, "a1") == {"address": "a1", "summary": {"ok": 1}}
    assert _finished_minima(tmp_path, "b2") is None  # other settings: retrain
    weights = tmp_path / "minima.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    assert _finished_minima(tmp_path, "a1") is None and not weights.exists()  # truncated: retrain
    (tmp_path / "minima.json").write_text('{"address": "a1", "summ')
    assert _finished_minima(tmp_path, "a1") is None


class _Payload:
    """A pickled object of this class would be rebuilt by calling code: a job cache must not load one."""

    def __reduce__(self):
        return (print, ("a pickle ran code",))


def test_job_cache_round_trips_results_without_pickles_and_refuses_pickled_objects(tmp_path, capsys):
    import numpy as np
    import torch

    from losstopo.executor import JobCache

    cache = JobCache(tmp_path / "jobs")
    result = {"max_loss": [0.5, np.float64(0.25)], "positions": [np.arange(3.0)], "pair": (0, 1),
              "minima_losses": {0: 1.0, 3: 2.0}, "thetas": torch.ones(2, 3), "note": None}
    cache.put("a", result)
    found, back = cache.get("a")
    assert found and back["pair"] == (0, 1) and back["minima_losses"] == {0: 1.0, 3: 2.0}
    assert isinstance(back["positions"][0], np.ndarray) and back["positions"][0].tolist() == [0.0, 1.0, 2.0]
    assert back["max_loss"] == [0.5, 0.25] and type(back["max_loss"][1]) is float
    assert torch.equal(back["thetas"], torch.ones(2, 3))
    with pytest.raises(TypeError, match="_Payload"):
        cache.put("b", {"x": _Payload()})
    torch.save({"x": _Payload()}, tmp_path / "jobs" / "c.pt")  # an entry someone else wrote
    assert cache.get("c") == (False, None)
    out = capsys.readouterr().out
    assert "a pickle ran code" not in out and "discarded unreadable job-cache entry" in out
    assert not (tmp_path / "jobs" / "c.pt").exists()


def test_losstopo_dataclasses_round_trip_and_other_names_are_refused():
    import torch

    from losstopo.io import DATACLASS_TAG, from_safe, to_safe
    from losstopo.train import MinimaResult

    result = MinimaResult(torch.zeros(2, 3), [0, 1], [0.1, 0.2], [1.0, 1.0], [0.3, 0.4], [0.9, 0.9], [5, 6],
                          [True, False], [{"epoch": 1}])
    back = from_safe(to_safe(result))
    assert isinstance(back, MinimaResult) and back.seeds == [0, 1] and torch.equal(back.thetas, result.thetas)
    with pytest.raises(TypeError, match="refusing"):
        from_safe({DATACLASS_TAG: "os:system", "fields": {}})


def test_a_read_only_array_is_stored_without_a_warning_and_its_copy_kept_apart():
    import warnings

    import numpy as np
    import torch

    from losstopo.io import from_safe, to_safe

    array = np.arange(6.0).reshape(2, 3)
    array.flags.writeable = False  # as a Ray worker's result arrives, from the object store
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy warns on a read-only array
        back = from_safe(to_safe({"a": array, "b": np.arange(3)}))
    assert np.array_equal(back["a"], array) and np.array_equal(back["b"], np.arange(3))
    stored = to_safe(array)
    stored[next(iter(stored))].add_(1)  # the stored tensor is a copy: the read-only array is untouched
    assert np.array_equal(array, np.arange(6.0).reshape(2, 3)) and isinstance(stored[next(iter(stored))], torch.Tensor)


def test_code_version_follows_the_imports_and_ignores_the_rest(tmp_path, monkeypatch):
    from losstopo import codeversion

    package = tmp_path / "losstopo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text("from losstopo.schedules import lr\nfrom . import models\nimport numpy\n"
                                      "from losstopo.config import MinimaConfig\nfrom losstopo.study.schema import S\n")
    (package / "config.py").write_text("class MinimaConfig:\n    def validate(self):\n        pass\n")
    (package / "study").mkdir()
    (package / "study" / "__init__.py").write_text("")
    (package / "study" / "schema.py").write_text("class S:\n    pass\n")  # an experiment's own settings schema
    (package / "schedules.py").write_text("def lr():\n    return 0.1\n")
    (package / "models.py").write_text("def build():\n    from losstopo.layers import conv  # a late import\n")
    (package / "layers.py").write_text("conv = 1\n")
    (package / "report.py").write_text("x = 1\n")
    monkeypatch.setattr(codeversion, "ROOT", tmp_path)

    def version():
        codeversion.module_closure.cache_clear()
        codeversion.module_version.cache_clear()
        return codeversion.module_version("losstopo.train")

    first = version()
    assert {p.name for p in (codeversion.module_closure("losstopo.train"))} == {
        "train.py", "schedules.py", "models.py", "layers.py", "__init__.py"}
    (package / "report.py").write_text("x = 2\n")  # not imported by training: same version
    assert version() == first
    (package / "config.py").write_text("class MinimaConfig:\n    def validate(self):\n        raise ValueError\n")
    assert version() == first  # the settings' schema: its values are in the addresses, its code is not
    (package / "study" / "schema.py").write_text("class S:\n    limit = 2\n")
    assert version() == first  # nor is an experiment's schema module
    assert "schema.py" in {p.name for p in codeversion.module_closure("losstopo.train", settings=True)}
    (package / "layers.py").write_text("conv = 2\n")  # a training constant two imports away: a new version
    assert version() != first
    monkeypatch.undo()
    codeversion.module_closure.cache_clear()
    codeversion.module_version.cache_clear()
