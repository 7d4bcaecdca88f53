"""chester.yaml: search order, validation errors, legacy keys, `chester config`."""

import json
import os
import subprocess
import sys
import time

import pytest

from chester.config import load_config
from chester.errors import ConfigError, UnknownBackendError

from .helpers import make_project, run_chester


def test_search_order_env_then_parents_then_defaults(tmp_path, monkeypatch):
    project = make_project(tmp_path / "proj", "log_dir: results\n")
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    cfg = load_config()
    assert cfg.path == project / "chester.yaml"
    assert cfg.log_dir == project / "results"
    other = tmp_path / "other.yaml"
    other.write_text("log_dir: elsewhere\n")
    monkeypatch.setenv("CHESTER_CONFIG_PATH", str(other))
    assert load_config().log_dir == tmp_path / "elsewhere"
    monkeypatch.delenv("CHESTER_CONFIG_PATH")
    bare = make_project(tmp_path / "bare")
    monkeypatch.chdir(bare)
    cfg = load_config()
    assert cfg.path is None and cfg.project_path == bare and cfg.log_dir == bare / "data"


def test_search_stops_at_the_git_root(tmp_path, monkeypatch):
    (tmp_path / "chester.yaml").write_text("log_dir: outside\n")
    project = make_project(tmp_path / "proj")
    monkeypatch.chdir(project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    assert load_config().path is None


@pytest.mark.parametrize("text, key, fix", [
    ("a: 1\nlog_dir: [unclosed\nb: {\n", "line 3, column 2", "YAML syntax error"),
    ("lgo_dir: data\n", "lgo_dir", "did you mean 'log_dir'"),
    ("sync_on_launch: maybe\n", "sync_on_launch", "expected true or false"),
    ("backends:\n  h:\n    type: local\n    max_paralel: 2\n", "backends.h.max_paralel",
     "did you mean 'max_parallel'"),
    ("backends:\n  h:\n    type: local\n    max_parallel: lots\n", "backends.h.max_parallel",
     "expected an integer"),
    ("package_manager: pip\n", "package_manager", "use uv, conda or python"),
    ("package_manager: conda\n", "conda_env", "add `conda_env"),
])
def test_bad_config_is_one_line_naming_file_key_and_fix(tmp_path, text, key, fix):
    project = make_project(tmp_path / "proj", text)
    r = run_chester(["config"], cwd=project)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    msg = lines[0]
    assert str(project / "chester.yaml") in msg
    assert key in msg and fix in msg, msg
    assert not (project / ".chester").exists(), "a bad config must leave nothing written"


def test_missing_required_option_names_it(tmp_path):
    import attrs

    from chester.config import build_options

    @attrs.frozen(kw_only=True)
    class Opts:
        host: str = attrs.field(metadata={"help": "SSH destination"})

    with pytest.raises(ConfigError) as err:
        build_options(Opts, {}, path="/x/chester.yaml", key="backends.gpu")
    assert str(err.value) == ("/x/chester.yaml: backends.gpu.host: missing required option "
                              "(add `host: ...` (SSH destination))")


def test_unknown_backend_type_names_installed_and_package(tmp_path):
    project = make_project(tmp_path / "proj", "backends:\n  big:\n    type: kubernetes\n")
    cfg = load_config(project / "chester.yaml")
    with pytest.raises(UnknownBackendError) as err:
        cfg.backend("big")
    msg = str(err.value)
    assert "backends.big.type" in msg and "kubernetes" in msg
    assert "installed: " in msg and "local" in msg
    assert "pip install" not in msg  # chester-backend-kubernetes does not exist
    with pytest.raises(UnknownBackendError) as err:
        cfg.backend("nope")
    assert "configured in" in str(err.value) and "big" in str(err.value)
    assert "pip install" not in str(err.value)


def test_launch_with_unknown_backend_exits_2_in_one_line(tmp_path):
    project = make_project(tmp_path / "proj")
    (project / "go.py").write_text(
        "import sys, chester\n"
        "from chester.errors import UserError\n"
        "try:\n    chester.launch(print, [{}], backend='nope')\n"
        "except UserError as e:\n    print(e, file=sys.stderr); sys.exit(2)\n")
    r = subprocess.run([sys.executable, "go.py"], cwd=project, capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown backend 'nope'" in r.stderr and "pip install" not in r.stderr
    assert not (project / ".chester").exists()


def test_an_unknown_backend_suggests_the_nearest_name_and_only_real_packages(tmp_path):
    project = make_project(tmp_path / "proj", "backends:\n  gpu: {type: slrum}\n")
    cfg = load_config(project / "chester.yaml")
    for name, said in (("locl", "did you mean 'local'?"), ("gpus", "did you mean 'gpu'?"),
                       ("cluster", "add this one to chester.yaml: backends: {cluster: "
                                   "{type: slurm, ...}}")):
        with pytest.raises(UnknownBackendError) as err:
            cfg.backend(name)
        assert said in str(err.value) and "pip install" not in str(err.value), str(err.value)
    with pytest.raises(UnknownBackendError) as err:
        cfg.backend("gpu")
    assert "backends.gpu.type" in str(err.value) and "did you mean 'slurm'?" in str(err.value)


def test_seed_keys_map_onto_named_backends(tmp_path):
    project = make_project(tmp_path / "proj", """
        ssh_hosts: [lab]
        host_address: {lab: me@lab.example, gl: me@gl.example}
        remote_dir: {lab: /home/me/proj, gl: /home/me/gl-proj}
        remote_header: {gl: "#!/bin/bash\\n#SBATCH --gpus=$gpus"}
        rsync_include: ["*.py"]
        rsync_exclude: ["data/"]
        prepare_commands: ["echo hi"]
    """)
    cfg = load_config(project / "chester.yaml")
    assert cfg.backend_raw("lab") == ("ssh", {"host": "me@lab.example",
                                               "remote_dir": "/home/me/proj"},
                                      f"{project / 'chester.yaml'} ssh_hosts")
    btype, raw, _ = cfg.backend_raw("gl")
    assert btype == "gl" and raw["host"] == "me@gl.example" and "remote_header" in raw
    assert "lab" in cfg.backend_names() and "gl" in cfg.backend_names()


def test_seed_module_attributes(tmp_path, monkeypatch):
    project = make_project(tmp_path / "proj", """
        log_dir: logs
        remote_dir: {gl: /remote/proj}
        rsync_include: ["*.py"]
        prepare_commands: ["source env.sh"]
    """)
    monkeypatch.chdir(project)
    monkeypatch.delenv("CHESTER_CONFIG_PATH", raising=False)
    from chester import config

    config.reload_config()
    try:
        assert config.PROJECT_PATH == str(project)
        assert config.LOG_DIR == str(project / "logs")
        assert config.REMOTE_DIR["gl"] == "/remote/proj"
        assert config.RSYNC_INCLUDE == ["*.py"]
        assert config.PREPARE_COMMANDS == ["source env.sh"]
        assert config.PACKAGE_MANAGER == "python"
        assert config.get_config_path() == project / "chester.yaml"
        with pytest.raises(AttributeError):
            config.NOT_A_KEY
    finally:
        monkeypatch.chdir(tmp_path)
        config.reload_config()


def test_chester_config_shows_values_and_sources(tmp_path):
    project = make_project(tmp_path / "proj", "log_dir: results\n")
    for argv in (["config"], ):
        r = run_chester(argv, cwd=project)
        assert r.returncode == 0, r.stderr
        assert "log_dir\tresults\t" + str(project / "chester.yaml") in r.stdout
        assert "package_manager\tpython\tdefault" in r.stdout
    r = subprocess.run([sys.executable, "-m", "chester.config"], cwd=project,
                       capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0 and "results" in r.stdout
    r = run_chester(["config", "--json"], cwd=project)
    assert '"key": "log_dir"' in r.stdout


@pytest.mark.parametrize("key,value,said", [
    ("gpu_state_dir", "/tmp/gpus", "nvidia-smi"),
    ("scheduler_username", "me", "by their records"),
    ("chester_queue_dir", "/tmp/queue", ".chester/autobot"),
    ("chester_scheduler_log_dir", "/tmp/logs", "scheduler.log"),
])
def test_seed_keys_nothing_implements_are_refused_not_ignored(tmp_path, key, value, said):
    project = make_project(tmp_path / "proj", f"{key}: {value}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(project / "chester.yaml")
    msg = str(ei.value)
    assert "\n" not in msg and f"chester.yaml: {key}: not supported" in msg and said in msg
    # the empty values seed configs often carry are fine
    empty = "[]" if value.startswith("[") else ("{}" if value.startswith("{") else "''")
    assert load_config(make_project(tmp_path / "ok", f"{key}: {empty}\n") / "chester.yaml")


def test_nested_option_groups_name_the_nested_key(tmp_path):
    project = make_project(tmp_path / "proj", "backends:\n  box:\n    type: local\n"
                           "    container: {image: /i.sif, bindz: [/x]}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(project / "chester.yaml").backend("box")
    assert "backends.box.container.bindz: unknown option" in str(ei.value)
    assert "did you mean 'binds'" in str(ei.value)
    # a string is the image
    project = make_project(tmp_path / "p2", "backends:\n  box:\n    type: local\n"
                           "    container: /images/x.sif\n")
    c = load_config(project / "chester.yaml").backend("box").options.container
    assert (c.image, c.runtime, c.nv) == ("/images/x.sif", "apptainer", None)


def test_a_chester_yaml_that_is_not_utf8_is_one_line(tmp_path):
    from .helpers import make_project, run_chester

    project = make_project(tmp_path / "p")
    (project / "chester.yaml").write_bytes(b"log_dir: data\n# caf\xe9 latin-1\n")
    r = run_chester(["config"], cwd=project)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "line 2" in r.stderr and "not UTF-8" in r.stderr and "Traceback" not in r.stderr


def test_chester_logs_configure_works_without_importing_the_module_first():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import chester; "
                        "chester.logs.configure(level='info'); print('ok')"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_seed_autobot_nodelist_is_the_autobot_backends_nodes(tmp_path):
    pytest.importorskip("chester_backend_autobot")
    project = make_project(tmp_path / "proj", "autobot_nodelist: ['1-1', '1-6', gpu9]\n"
                           "host_address: {autobot: me@login}\n"
                           "remote_dir: {autobot: /home/me/proj}\n"
                           "backends:\n  lab:\n    type: autobot\n    host: me@login\n"
                           "    remote_dir: /home/me/proj\n"
                           "  lab2:\n    type: autobot\n    host: me@login\n"
                           "    remote_dir: /home/me/proj\n    nodes: [n1]\n")
    cfg = load_config(project / "chester.yaml")
    for name in ("autobot", "lab"):  # the seed's mode name, and a named backend
        o = cfg.backend(name).options
        assert o.nodes == ("autobot-1-1", "autobot-1-6", "gpu9")
    assert cfg.backend("lab2").options.nodes == ("n1",)  # the backend's own list wins
    assert cfg.backend("autobot").options.host == "me@login"


def test_an_unchanged_chester_yaml_is_read_without_the_yaml_parser(tmp_path):
    """The parsed file is remembered by its text's digest (as JSON, where JSON holds it
    exactly): the next command reads the same config without importing yaml; an edited
    file, a value JSON cannot hold and a syntax error are each parsed by YAML."""
    cfg = tmp_path / "chester.yaml"
    cfg.write_text("log_dir: data\nbackends:\n  box:\n    type: local\n    max_parallel: 3\n")
    code = ("import json, sys\nfrom pathlib import Path\nfrom chester.config import load_config\n"
            "c = load_config(Path(sys.argv[1]))\n"
            "print(json.dumps([c.backend('box').options.max_parallel, str(c.log_dir), "
            "'yaml' in sys.modules]))\n")
    env = {**os.environ, "CHESTER_CACHE_DIR": str(tmp_path / "cache")}

    def load():
        r = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    first = load()
    assert first[:2] == [3, str(tmp_path / "data")] and first[2] is True
    assert load() == [3, str(tmp_path / "data"), False]  # remembered: no YAML parser
    cfg.write_text(cfg.read_text().replace("3", "5"))
    assert load() == [5, str(tmp_path / "data"), True]  # edited: parsed again
    assert load()[2] is False
    memos = list((tmp_path / "cache" / "config").iterdir())
    assert len(memos) == 2
    # a value JSON would change (a date) is never remembered
    from chester import config

    assert not config._json_exact({"when": __import__("datetime").date(2026, 12, 3)})
    assert not config._json_exact({1: "int key"}) and not config._json_exact([float("nan")])
    assert config._json_exact({"a": [1, 2.5, True, None, "x"]})
    cfg.write_text("backends: [unclosed\n")
    r = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True,
                       env=env, cwd=tmp_path)
    assert r.returncode != 0 and "YAML syntax error" in r.stderr and "line" in r.stderr
    assert len(list((tmp_path / "cache" / "config").iterdir())) == 2


def test_the_cache_keeps_the_most_recently_used_files_and_none_used_lately(tmp_path):
    """Beyond ``keep`` files, the least recently used go, unless used within the last day;
    other names and hidden temporary files are left alone."""
    from chester.config import prune_cache, touch

    now = time.time()
    for i in range(10):  # f0 used 10.5 days ago ... f9 1.5 days ago
        f = tmp_path / f"f{i}.json"
        f.write_text("{}")
        os.utime(f, (now - (10.5 - i) * 86400,) * 2)
    (tmp_path / "fresh.json").write_text("{}")  # written just now
    (tmp_path / "lately.json").write_text("{}")
    os.utime(tmp_path / "lately.json", (now - 12 * 3600,) * 2)  # used 12 hours ago
    (tmp_path / ".f0.json.123.tmp").write_text("")
    (tmp_path / "other.txt").write_text("")
    touch(tmp_path / "f0.json")  # the oldest, used again now
    prune_cache(tmp_path, "", ".json", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".f0.json.123.tmp", "f0.json", "fresh.json", "lately.json", "other.txt"]
    prune_cache(tmp_path / "missing", "", ".json", keep=1)  # no folder: nothing to do


def test_remembered_configs_and_runtimes_stay_bounded(tmp_path, monkeypatch):
    """A new remembered config, or a new runtime, prunes what was not used for a day
    beyond the newest ones: the cache does not grow with every edit or every version."""
    from chester import config
    from chester.remote import runtime

    monkeypatch.setenv("CHESTER_CACHE_DIR", str(tmp_path / "cache"))
    memos = tmp_path / "cache" / "config"
    memos.mkdir(parents=True)
    old = time.time() - 3 * 86400
    for i in range(config.CONFIG_MEMOS + 20):
        f = memos / f"{i:032x}.json"
        f.write_text('{"yaml": {}}')
        os.utime(f, (old,) * 2)
    assert config._parsed_yaml("backends: {}\n") == {"backends": {}}
    assert len(list(memos.iterdir())) == config.CONFIG_MEMOS

    rts = runtime.cache_dir()
    rts.mkdir(parents=True)
    for i in range(runtime.RUNTIMES_KEPT + 5):
        for name in (f"chester-{i:020x}.pyz", f"index-{i:024x}"):
            (rts / name).write_text("")
            os.utime(rts / name, (old,) * 2)
    runtime._BUILT.clear()
    rt = runtime.build()
    kept = sorted(p.name for p in rts.iterdir() if p.name.endswith(".pyz"))
    assert len(kept) == runtime.RUNTIMES_KEPT and rt.path.name in kept
    assert len([p for p in rts.iterdir() if p.name.startswith("index-")]) == \
        runtime.RUNTIMES_KEPT + 5 + 1  # under the index files' own bound
    assert runtime.build().path == rt.path and rt.path.exists()  # and found again


@pytest.mark.parametrize("text,key", [
    ("log_dir:\n", "log_dir"),
    ("log_dir: ''\n", "log_dir"),
    ("log_dir: null\n", "log_dir"),
    ("package_manager:\n", "package_manager"),
    ("sync_on_launch:\n", "sync_on_launch"),
    ("hydra_config_path: ~\n", "hydra_config_path"),
    ("backends:\n  box:\n    type: local\n    use_singularity:\n", "backends.box.use_singularity"),
])
def test_a_key_left_empty_is_one_line_naming_file_key_and_fix(tmp_path, text, key):
    """`log_dir:` (YAML's null) passed `chester config` and crashed `chester launch` with a
    TypeError; now both say in one line which file and key, and what to write."""
    project = make_project(tmp_path / "proj", text)
    for args in (["config"], ["launch", "-b", "box" if "box" in text else "local", "-p", "e",
                              "--", "python", "-c", "pass", "x=1"]):
        r = run_chester(args, cwd=project)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert str(project / "chester.yaml") in r.stderr and f"{key}: is empty" in r.stderr
        assert "remove the line" in r.stderr or "give " in r.stderr
    assert not (project / ".chester").exists()


def test_an_empty_key_whose_default_is_empty_stays_accepted(tmp_path):
    """Seed configs carry empty lists, mappings and unset names: those keep their meaning."""
    project = make_project(tmp_path / "proj", "conda_env:\nremote_log_dir:\nrsync_include:\n"
                           "chester_queue_dir:\nbackends:\n  box:\n    type: local\n"
                           "    max_parallel:\n")
    cfg = load_config(project / "chester.yaml")
    assert cfg["conda_env"] is None and cfg["rsync_include"] == [] and cfg.log_dir.name == "data"
    assert cfg.backend("box").options.max_parallel is None


#: A config of the earlier chester in the shape its repository commits (its chester.yaml and
#: chester.yaml.example: every seed key, remote_log_dir equal to remote_dir + log_dir for
#: each mode, the empty autobot keys and scheduler_username).
SEED_CONFIG = """\
log_dir: data
package_manager: uv
sync_on_launch: true
host_address:
  local: ""
  gl: "greatlakes"
ssh_hosts: []
remote_dir:
  local: /home/someone/code
  gl: /home/someone/remote/project
remote_log_dir:
  local: /home/someone/code/data
  gl: /home/someone/remote/project/data/
remote_header:
  gl: |
    #!/usr/bin/env bash
    #SBATCH --nodes=1
    #SBATCH --gpus=$gpus
simg_path:
  gl: null
cuda_module:
  gl: cuda/12.1.1
modules:
  gl: [singularity]
remote_mount_option:
  gl: /usr/share/glvnd
rsync_include: []
rsync_exclude: [data/, .venv/]
prepare_commands: []
hydra_config_path: configs
autobot_nodelist:
gpu_state_dir: ""
chester_queue_dir: ""
chester_scheduler_log_dir: ""
scheduler_username: ""
"""


def test_the_earlier_chesters_config_loads_with_remote_log_dir(tmp_path):
    """remote_log_dir equal to remote_dir + log_dir is accepted (a trailing slash too) and is
    where the seed's module API says the runs go; the backends still validate."""
    from chester import config as seed_config

    project = make_project(tmp_path / "proj", SEED_CONFIG)
    cfg = load_config(project / "chester.yaml")
    assert cfg.backend("gl").options.remote_dir == "/home/someone/remote/project"
    assert cfg.backend("local").type == "local"
    r = run_chester(["config"], cwd=project)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-c", "from chester import config; "
                        "print(config.REMOTE_LOG_DIR['gl'], config.REMOTE_LOG_DIR['local'], "
                        "config.SCHEDULER_USERNAME == '')"],
                       cwd=project, capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "CHESTER_CONFIG_PATH"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/home/someone/remote/project/data/",
                                "/home/someone/code/data", "True"]
    assert seed_config is not None


@pytest.mark.parametrize("extra,key,want", [
    ("remote_dir: {gl: /home/me/proj}\nremote_log_dir: {gl: /scratch/me/logs}\n",
     "remote_log_dir.gl", "/home/me/proj/data"),
    ("log_dir: results\nremote_dir: {box: /r/p}\nremote_log_dir: {box: /r/p/data}\n"
     "ssh_hosts: [box]\nhost_address: {box: me@box}\n", "remote_log_dir.box", "/r/p/results"),
    ("backends: {gpu: {type: ssh, host: me@gpu, remote_dir: /srv/p}}\n"
     "remote_dir: {gpu: /old}\nremote_log_dir: {gpu: /old/data}\n", "remote_log_dir.gpu",
     "/srv/p/data"),
])
def test_remote_log_dir_that_contradicts_remote_dir_and_log_dir_is_refused(tmp_path, extra,
                                                                            key, want):
    project = make_project(tmp_path / "proj", extra)
    with pytest.raises(ConfigError) as ei:
        load_config(project / "chester.yaml")
    msg = str(ei.value)
    assert "\n" not in msg and f"chester.yaml: {key}: " in msg
    assert f"contradicts remote_dir + log_dir ({want})" in msg and f"set it to {want}" in msg
    r = run_chester(["config"], cwd=project)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and key in r.stderr


def test_remote_log_dir_of_a_backend_without_remote_dir_is_its_local_log_dir(tmp_path):
    """A SLURM backend without remote_dir runs in place (a shared file system): its runs go
    to the local log folder, so that is the only remote_log_dir it takes."""
    project = make_project(tmp_path / "proj", "remote_log_dir: {gl: /scratch/me/data}\n"
                           "host_address: {gl: me@login}\n")
    cfg = load_config(project / "chester.yaml")
    with pytest.raises(ConfigError) as ei:
        cfg.backend("gl")
    assert f"remote_log_dir.gl: /scratch/me/data contradicts remote_dir + log_dir " \
           f"({project / 'data'})" in str(ei.value)
    ok = make_project(tmp_path / "ok", f"remote_log_dir: {{gl: {tmp_path / 'ok' / 'data'}}}\n"
                      "host_address: {gl: me@login}\n")
    assert load_config(ok / "chester.yaml").backend("gl").options.remote_dir is None
    with pytest.raises(ConfigError, match="remote_log_dir.x: expected a folder path"):
        load_config(make_project(tmp_path / "p2", "remote_log_dir: {x: [1]}\n") / "chester.yaml")
