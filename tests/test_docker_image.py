"""The image build hash-checks every package it installs (issue #25): docker/Dockerfile installs only
from the locks of scripts/lock_image.sh (docker/build.lock, docker/requirements.lock,
docker/torch-<flavour>.lock), each file pinned by its SHA-256, and builds nothing in an isolated build
environment (whose setuptools pip would fetch unchecked). Read from the files; no network, no docker."""
from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
INSTALLERS = ("uv", "easy_install", "conda", "mamba", "pipx", "poetry")
VALUED = {"-r", "--requirement", "-c", "--constraint", "--only-binary", "--no-binary", "-i", "--index-url",
          "--extra-index-url", "-f", "--find-links", "--target", "--prefix", "--root"}   # pip options with a value


# ------------------------------------------------------------------------------------------ reading
def _runs(dockerfile: str) -> list[str]:
    """The shell text of every RUN instruction (continuation lines joined)."""
    return [line[4:] for line in dockerfile.replace("\\\n", " ").splitlines() if line.startswith("RUN ")]


def _commands(run: str) -> list[list[str]]:
    """The simple commands of one RUN, as words (split at ``&&``, ``||``, ``;`` and ``|``)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, words = [], []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append(words)
            words = []
        else:
            words.append(token)
    return [c for c in commands + [words] if c]


def _pip_install(words: list[str]) -> tuple[list[str], dict[str, list[str]]] | None:
    """(targets, options -> values) of a ``pip install`` command, None for any other command."""
    start = 1 if words[0] in ("pip", "pip3") else 3 if words[0].startswith("python") and words[1:3] == ["-m", "pip"] \
        else None
    if start is None or words[start:start + 1] != ["install"]:
        return None
    targets, options, args = [], {}, iter(words[start + 1:])
    for arg in args:
        if arg in VALUED:
            options.setdefault(arg, []).append(next(args))
        elif arg.startswith("-"):
            options.setdefault(arg, [])
        else:
            targets.append(arg)
    return targets, options


def _install_problems(dockerfile: str) -> tuple[list[str], list[str]]:
    """(problems, lock paths installed) of ``dockerfile``: every ``pip install`` installs ``-r`` locks with
    ``--require-hashes --no-deps``, or only the local project (``.``) with ``--no-deps``; each with
    ``--no-cache-dir`` and ``--no-build-isolation`` or ``--only-binary :all:``; no other installer, no
    Python package from apt."""
    problems, locks = [], []
    for run in _runs(dockerfile):
        for words in _commands(run):
            text, pip = " ".join(words), _pip_install(words)
            if pip is not None:
                targets, options = pip
                files = options.get("-r", []) + options.get("--requirement", [])
                if "--no-cache-dir" not in options:
                    problems.append(f"no --no-cache-dir: {text}")
                if "--no-build-isolation" not in options and ":all:" not in options.get("--only-binary", []):
                    problems.append(f"may build in an isolated environment: {text}")
                if targets == ["."] and not files:
                    if "--no-deps" not in options:
                        problems.append(f"the local project without --no-deps: {text}")
                elif targets or not files:
                    problems.append(f"installs {targets or 'nothing'} outside a lock: {text}")
                elif "--require-hashes" not in options or "--no-deps" not in options:
                    problems.append(f"a lock without --require-hashes --no-deps: {text}")
                locks += files
            elif words[0] in INSTALLERS or words[0].startswith("python") and "-m" in words \
                    and words[words.index("-m") + 1:][:1] in (["ensurepip"], ["uv"]):
                problems.append(f"an installer other than pip install: {text}")
            elif words[0] in ("apt-get", "apt") and "install" in words:
                python = [w for w in words if re.match(r"python3?-|pip", w)]
                if python:
                    problems.append(f"Python packages from apt ({', '.join(python)}): {text}")
    return problems, locks


def _read_lock(text: str) -> tuple[dict[str, tuple[str, list[str]]], list[str], dict[str, str], list[str]]:
    """(entries name -> (version, hashes), option lines, against file -> sha256, problems) of a lock."""
    entries, options, against, problems = {}, [], {}, []
    name = None
    lines = []
    for raw in text.splitlines():
        line = raw.strip().rstrip("\\").strip()
        if line.startswith("#") or " --hash=" not in line:
            lines.append(line)
        else:                       # a requirement with its hashes on one line
            words = line.split()
            lines += [" ".join(w for w in words if not w.startswith("--hash="))]
            lines += [w for w in words if w.startswith("--hash=")]
    for line in lines:
        if not line:
            continue
        if line.startswith("# against "):
            path, _, digest = line[len("# against "):].partition(" sha256:")
            against[path] = digest
        elif line.startswith("#"):
            continue
        elif line.startswith("--hash="):
            if name is None or not re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", line):
                problems.append(f"a hash that is not a SHA-256 of a pinned requirement: {line}")
            else:
                entries[name][1].append(line)
        elif line.startswith("-"):
            options.append(line)
            name = None
        else:
            req = Requirement(line)
            pins = [s for s in req.specifier if s.operator == "=="]
            if len(req.specifier) != 1 or not pins:
                problems.append(f"not pinned with ==: {line}")
            name = canonicalize_name(req.name)
            if name in entries:
                problems.append(f"{name} twice")
            entries[name] = (pins[0].version if pins else "", [])
    problems += [f"{n}=={v} has no --hash" for n, (v, hashes) in entries.items() if not hashes]
    return entries, options, against, problems


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    entries, _, _, problems = _read_lock((DOCKER / name).read_text())
    assert not problems, (name, problems)
    return entries


def _flavours() -> list[str]:
    return sorted(p.name[len("torch-"):-len(".lock")] for p in DOCKER.glob("torch-*.lock"))


def _default_flavour() -> str:
    match = re.search(r"^ARG TORCH_FLAVOUR=(\S+)$", (DOCKER / "Dockerfile").read_text(), re.M)
    assert match, "docker/Dockerfile has no ARG TORCH_FLAVOUR=<default>"
    return match.group(1)


def _pins() -> dict[str, str]:
    """docker/requirements.txt: name -> pinned version."""
    pins = {}
    for line in (DOCKER / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = next(s.version for s in req.specifier if s.operator == "==")
    return pins


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ------------------------------------------------------------------------------------------ the Dockerfile
def test_every_pip_install_in_the_dockerfile_checks_hashes_or_is_the_local_project():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    problems, locks = _install_problems(dockerfile)
    assert problems == []
    assert locks == ["docker/build.lock", "docker/requirements.lock", "docker/torch-${TORCH_FLAVOUR}.lock"]
    assert re.search(r"pip install (--\S+ )*--no-deps (--\S+ )*\.( |$)", dockerfile.replace("\\\n", " "), re.M)
    # and the check sees each way to install an unchecked package
    good = "RUN pip install --no-cache-dir --require-hashes --no-deps --no-build-isolation -r docker/requirements.lock"
    for bad, words in (
            (good.replace("--require-hashes ", ""), "without --require-hashes"),
            (good + " && pip install --no-cache-dir --no-build-isolation --index-url https://x torch==2.14.1",
             r"installs \['torch==2.14.1'\] outside a lock"),
            (good.replace("--no-deps ", ""), "without --require-hashes --no-deps"),
            (good.replace("--no-cache-dir ", ""), "no --no-cache-dir"),
            (good.replace("--no-build-isolation ", ""), "isolated environment"),
            ("RUN python -m pip install --no-cache-dir --no-build-isolation .", "local project without --no-deps"),
            ("RUN python3 -m pip install --no-cache-dir --no-deps --no-build-isolation --upgrade pip setuptools",
             "outside a lock"),
            ("RUN apt-get update && apt-get install -y --no-install-recommends git python3-yaml", "from apt"),
            ("RUN uv pip install --system torch", "other than pip install")):
        assert any(re.search(words, p) for p in _install_problems(bad)[0]), bad


def test_a_flavour_without_a_lock_fails_the_build_naming_the_fix(tmp_path):
    """The RUN that installs the locks, run by sh with no commands on PATH: a flavour without a lock stops
    it before any install, naming the locked flavours and scripts/lock_image.sh; a locked one goes on."""
    run = next(r for r in _runs((DOCKER / "Dockerfile").read_text()) if "TORCH_FLAVOUR" in r)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "torch-pypi.lock").write_text("")
    (tmp_path / "bin").mkdir()

    def build(flavour):
        return subprocess.run(["/bin/sh", "-c", run], cwd=tmp_path, capture_output=True, text=True,
                              env={"PATH": str(tmp_path / "bin"), "TORCH_FLAVOUR": flavour})

    done = build("cu999")
    assert done.returncode == 1
    assert "no docker/torch-cu999.lock" in done.stderr and "locked: docker/torch-pypi.lock" in done.stderr
    assert "./scripts/lock_image.sh cu999" in done.stderr
    assert build("pypi").returncode == 127      # past the check: the next command, pip, is not on PATH


# ------------------------------------------------------------------------------------------ the locks
def test_every_lock_line_is_pinned_with_a_sha256():
    names = sorted(p.name for p in DOCKER.glob("*.lock"))
    assert {"build.lock", "requirements.lock", f"torch-{_default_flavour()}.lock"} <= set(names)
    for name in names:
        entries = _lock(name)
        assert entries, name
    # and the reader sees a requirement without a hash, a range, a bad hash; and reads hashes on one line
    for bad, words in (("six==1.17.0\nidna==3.10 \\\n    --hash=sha256:" + "a" * 64, "six==1.17.0 has no --hash"),
                       ("six>=1.16 \\\n    --hash=sha256:" + "a" * 64, "not pinned"),
                       ("six==1.17.0 \\\n    --hash=md5:" + "a" * 32, "not a SHA-256")):
        assert any(words in p for p in _read_lock(bad)[3]), bad
    for good in ("six==1.17.0 --hash=sha256:" + "a" * 64, "six==1.17.0 \\\n    --hash=sha256:" + "a" * 64):
        assert _read_lock(good)[0] == {"six": ("1.17.0", ["--hash=sha256:" + "a" * 64])}, good


def test_the_locks_hold_every_package_the_image_installs_once():
    """Per flavour: docker/requirements.txt (pyproject's dependencies) and pyproject's build requires
    are all in the locks the Dockerfile installs, at their versions, and no package is in two locks."""
    build, base = _lock("build.lock"), _lock("requirements.lock")
    for req in map(Requirement, _pyproject()["build-system"]["requires"]):
        name = canonicalize_name(req.name)
        assert name in build and req.specifier.contains(build[name][0]), (req, build.get(name))
    for flavour in _flavours():
        torch = _lock(f"torch-{flavour}.lock")
        locks = (("build.lock", build), ("requirements.lock", base), (f"torch-{flavour}.lock", torch))
        for (a, one), (b, other) in zip(locks, locks[1:] + locks[:1]):
            assert not set(one) & set(other), f"{sorted(set(one) & set(other))} both in {a} and {b}"
        every = {**build, **base, **torch}
        for name, version in _pins().items():
            assert name in every, f"{name} of docker/requirements.txt is in no lock of flavour {flavour}"
            assert Version(every[name][0]).public == version, (flavour, name, every[name][0])
        assert "torch" in torch and "torchvision" in torch and "torch" not in base


def test_torch_and_torchvision_in_every_lock_are_pyprojects_pins():
    deps = {canonicalize_name(r.name): r for r in map(Requirement, _pyproject()["project"]["dependencies"])}
    pins = _pins()
    assert _flavours()
    for flavour in _flavours():
        torch = _lock(f"torch-{flavour}.lock")
        for name in ("torch", "torchvision"):
            version = Version(torch[name][0])
            assert version.public == pins[name], f"torch-{flavour}.lock: {name}=={version}, pinned {pins[name]}"
            assert deps[name].specifier.contains(version, prereleases=True), (flavour, version, deps[name])
            # a PyTorch index wheel carries its flavour (2.14.1+cpu); PyPI's none
            assert version.local == (None if flavour == "pypi" else flavour), (flavour, version)


def test_each_lock_was_resolved_against_the_current_locks_above_it():
    """A lock records the SHA-256 of the locks it was resolved against (-c): after a change to one,
    scripts/lock_image.sh must run again, or a package both need could install at two versions."""
    def digest(name):
        return hashlib.sha256((DOCKER / name).read_bytes()).hexdigest()

    above = {"build.lock": [], "requirements.lock": ["build.lock"]}
    above.update({f"torch-{f}.lock": ["build.lock", "requirements.lock"] for f in _flavours()})
    for name, wanted in above.items():
        against = _read_lock((DOCKER / name).read_text())[2]
        assert sorted(against) == [f"docker/{w}" for w in wanted], name
        for path, sha in against.items():
            assert sha == digest(path[len("docker/"):]), \
                f"docker/{name} was resolved against another {path}: run ./scripts/lock_image.sh"


def test_a_pytorch_index_flavour_names_its_index_and_pypi_none():
    for flavour in _flavours():
        options = _read_lock((DOCKER / f"torch-{flavour}.lock").read_text())[1]
        assert options == ([] if flavour == "pypi" else [f"--extra-index-url {PYTORCH_INDEX}{flavour}"]), flavour
    for name in ("build.lock", "requirements.lock"):
        assert _read_lock((DOCKER / name).read_text())[1] == [], name


def test_the_image_copies_the_locks_and_runs_as_uid_1000():
    """docs/CLUSTER.md: a volume a task writes to must be writable by UID 1000."""
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    assert "COPY docker/*.lock docker/" in lines and "USER 1000" in lines
