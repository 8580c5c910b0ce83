"""The host a benchmark reports: read from /proc/cpuinfo's first processor, the features that
change the engines' kernels, and what is unknown said so."""

from __future__ import annotations

from packager.bench.host import FEATURES, describe_host

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R45
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 sha_ni

processor\t: 1
model name\t: another
flags\t\t: fpu avx512_vnni
"""


def test_the_cpu_and_its_features_come_from_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    host = describe_host(path)
    assert host.cpu == "AMD EPYC 9R45"
    assert host.features == ("avx2", "fma", "avx512f", "avx512_bf16")  # in FEATURES' order, only those
    assert host.cpus >= 1
    line = host.summary()
    assert line.startswith("host: AMD EPYC 9R45, ") and "(avx2 fma avx512f avx512_bf16)" in line, line


def test_a_cpu_without_any_of_the_features_and_an_unreadable_cpuinfo_say_so(tmp_path):
    plain = tmp_path / "cpuinfo"
    plain.write_text("model name\t: Old\nflags\t\t: fpu sse2\n")
    assert describe_host(plain).features == ()
    assert f"(none of {' '.join(FEATURES)})" in describe_host(plain).summary()
    missing = describe_host(tmp_path / "absent")
    assert missing.features is None and "(features unknown)" in missing.summary()
