"""The CPU a stage ran on, as its timing record and the report name it (losstopo.machine)."""

from losstopo.machine import cpu_description
from losstopo.reporting import where_words

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: another model, never read
flags\t\t: fpu
"""


def test_the_cpu_is_named_by_its_first_processors_model_and_speed_features():
    assert cpu_description(XEON) == "Intel(R) Xeon(R) Platinum 8480+ (avx2, avx512f, avx512_bf16, amx_bf16)"
    assert cpu_description("model name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma\n") == "AMD EPYC (avx2)"
    assert cpu_description("model name\t: Old\nflags\t\t: fpu sse\n") == "Old (no avx2)"
    assert cpu_description("model name\t: Neoverse\n") == "Neoverse"  # no flags line (not x86): the model only


def test_the_reports_where_column_names_the_cpu_where_recorded():
    record = {"device": "cpu", "executor": "ray", "cpus_per_job": 1.0, "threads": 2, "cpu": "AMD EPYC (avx2)"}
    assert where_words(record) == "cpu (AMD EPYC (avx2)), ray executor, 1 CPU per job"
    assert where_words(record | {"executor": "local"}) == "cpu (AMD EPYC (avx2)), 2 threads, local executor"
    older = {k: v for k, v in record.items() if k != "cpu"}  # a record written before the CPU was recorded
    assert where_words(older) == "cpu, ray executor, 1 CPU per job"
    assert where_words(record | {"device": "cuda"}) == "cuda, ray executor, 1 CPU per job"
