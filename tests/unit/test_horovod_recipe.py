"""The Horovod build recipe's pure parts: the C++17 compiler wrapper, the package match, the cache key."""

from __future__ import annotations

import subprocess
import sys

from torchyard.environments import cxx17_wrapper_script, environment_key, needs_horovod, requirement_name
from torchyard.spec.job import EnvironmentSpec


def test_the_wrapper_upgrades_the_standard_and_passes_everything_else(tmp_path):
    echo = tmp_path / "fake-cxx"
    echo.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    echo.chmod(0o755)
    wrapper = tmp_path / "cxx17"
    wrapper.write_text(cxx17_wrapper_script(str(echo)))
    wrapper.chmod(0o755)
    args = ["-std=c++11", "-O3", "-std=c++14", "-DX=a b", "-std=gnu++14", "-std=c++20", "-c", "x.cc"]
    out = subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '["-std=c++17", "-O3", "-std=c++17", "-DX=a b", "-std=c++17", "-std=c++20", "-c", "x.cc"]'
    wrapper.write_text(cxx17_wrapper_script(str(echo), drop_debug_info=True))  # the recipe's: RelWithDebInfo's -g left out
    out = subprocess.run([str(wrapper), "-O3", "-g", "-DNDEBUG", "-ggdb", "-std=c++14", "-c", "x.cc"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == '["-O3", "-DNDEBUG", "-ggdb", "-std=c++17", "-c", "x.cc"]'


def test_horovod_is_recognized_in_any_spelling():
    for spec in ("horovod", "Horovod==0.28.1", "horovod[pytorch]>=0.28", "horovod ; python_version>'3'"):
        assert requirement_name(spec) == "horovod", spec
    assert needs_horovod(EnvironmentSpec(pip_packages=("numpy", "horovod==0.28.1")))
    assert not needs_horovod(EnvironmentSpec(pip_packages=("horovod-tools",)))


def test_the_recipe_is_part_of_the_cache_key(monkeypatch):
    monkeypatch.delenv("HOROVOD_DEBUG", raising=False)
    plain = environment_key(EnvironmentSpec(pip_packages=("horovod-tools",)))
    hvd = environment_key(EnvironmentSpec(pip_packages=("horovod",)))
    assert plain != hvd
    assert hvd == environment_key(EnvironmentSpec(pip_packages=("horovod",)))
    monkeypatch.setenv("HOROVOD_DEBUG", "1")  # Horovod's Debug build (keeps -g): a build of its own
    assert environment_key(EnvironmentSpec(pip_packages=("horovod",))) != hvd
    assert environment_key(EnvironmentSpec(pip_packages=("horovod-tools",))) == plain
