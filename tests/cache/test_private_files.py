"""Cache files are the user's alone: a row's metadata detokenizes to the prompt that made it.

What a user checks: after a real save, every directory the system made is 0700 and every file 0600,
whatever the umask; a row in a tier folder the user made world-readable is still 0600; and when the
tests run as root, the unprivileged user ``nobody`` cannot read a row.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cachetest_util import meta_for, rand_tokens

from actors.cache import kvc
from actors.cache.publish import publish_file, publish_parts
from actors.private_files import NotPrivate, ensure_own_private_dir, is_private_file, make_private_dirs
from tests.waiting import wait_until

NOBODY = 65534


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextlib.contextmanager
def _open_dir() -> Iterator[Path]:
    """A world-traversable folder outside pytest's private tmp dir, so a denial proves our own modes."""
    path = Path(tempfile.mkdtemp(prefix="llama-actors-modes-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _loose(root: Path) -> list[str]:
    """Everything under ``root`` that someone other than the owner could open."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                out.append(f"{p} {oct(stat.S_IMODE(st.st_mode))}")
    return out


def _as_nobody_can_read(path: str) -> bool:
    run = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                          "cat", path], capture_output=True, timeout=30)
    return run.returncode == 0


def test_new_directories_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    with _umask(0):
        made = make_private_dirs(tmp_path / "a" / "b" / "c")
    for d in (tmp_path / "a", tmp_path / "a" / "b", Path(made)):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    make_private_dirs(mine)  # an existing folder of the user's keeps its mode
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755


def test_a_shared_root_that_is_a_link_or_not_ours_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(NotPrivate) as e:
        ensure_own_private_dir(tmp_path / "link")
    assert e.value.reason == "not_a_directory"
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    ensure_own_private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    if os.geteuid() != 0:
        return
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(NotPrivate) as e:
        ensure_own_private_dir(foreign)
    assert e.value.reason == "foreign_owner"


def test_published_rows_are_0600_even_from_a_loose_staging_file(tmp_path: Path) -> None:
    tier = tmp_path / "tier"
    tier.mkdir()
    meta = meta_for(rand_tokens(64))
    row = kvc.encode("finish", meta, os.urandom(4096), b"\0" * 16)
    staged = tmp_path / "staged.kvc"
    with _umask(0):
        staged.write_bytes(row)
        staged.chmod(0o644)  # a writer that forgot: publish_file hard-links it into the tier
        linked = publish_file(str(staged), str(tier), meta.key, move=True, fsync=False)
        other = meta_for(rand_tokens(64, seed=1))
        parts = publish_parts([kvc.encode("finish", other, os.urandom(4096), b"\0" * 16)], str(tier), other.key,
                              fsync=False)
    for result in (linked, parts):
        assert result.path and is_private_file(result.path), oct(os.stat(result.path).st_mode)
    assert _loose(tier) == []


@pytest.mark.timeout(120)
def test_a_real_save_writes_only_private_files_and_nobody_cannot_read_a_row() -> None:
    from tests.actors.conftest import running_system

    with _open_dir() as base:
        user_folder = base / "disk"  # a tier folder the user made world-readable: its rows stay private
        user_folder.mkdir(mode=0o755)
        user_folder.chmod(0o755)
        with running_system(base) as s:  # run dir, ram_file and disk tiers under base
            s.load_model("m", backend="stub")
            prompt = "a private prompt about the quarterly numbers " * 3
            assert s.prefill_only("m", prompt, tier="disk").finish_key is not None
            assert s.prefill_only("m", prompt + " and more", tier="ram_file").finish_key is not None

            def published() -> list[Path]:  # writer processes publish after the reply
                found = [sorted(user_folder.glob("*.kvc")), sorted((base / "ram_file").glob("*.kvc"))]
                return found[0] + found[1] if all(found) else []

            rows = wait_until(published, 30)
            assert rows, "the two saves were not published"
            assert all(is_private_file(r) for r in rows)
            assert _loose(base / "run") == [] and _loose(base / "ram_file") == [] and _loose(user_folder) == []
            assert stat.S_IMODE((base / "run").stat().st_mode) == 0o700
            assert stat.S_IMODE((base / "ram_file").stat().st_mode) == 0o700
            assert stat.S_IMODE(user_folder.stat().st_mode) == 0o755  # the user's folder keeps its mode
            if os.geteuid() != 0 or not shutil.which("setpriv"):
                return  # the nobody check needs root to switch users
            probe = base / "probe"
            probe.write_text("readable")
            probe.chmod(0o644)
            assert _as_nobody_can_read(str(probe)), "setpriv as nobody should read a 0644 file"
            for r in rows:
                assert not _as_nobody_can_read(str(r)), f"nobody read {r}"
