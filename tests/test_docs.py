"""The docs stay true to the code."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: CHESTER_UPDATE_DOCS=1 makes every drift test write the page it compares (docs/contributing.md)
UPDATE = os.environ.get("CHESTER_UPDATE_DOCS") == "1"


def _generator(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_generated(page: Path, text: str) -> None:
    """The page equals what its generator writes now (or is rewritten, when updating)."""
    if UPDATE:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(text)
    assert page.read_text() == text, \
        f"{page.relative_to(ROOT)} differs from the code: run `nox -s docs` " \
        "(or CHESTER_UPDATE_DOCS=1, docs/contributing.md)"


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_hook_reference_is_generated_from_the_specs():
    _check_generated(ROOT / "docs/hooks.md", _generator("gen_hooks").render())


def test_records_reference_is_generated_from_the_types():
    text = _generator("gen_records").render()
    _check_generated(ROOT / "docs/records.md", text)
    import attrs

    from chester import types

    for cls in (types.RunStatus, types.RunHandle, types.RunSpec, types.PullResult):
        for f in attrs.fields(cls):
            assert f"| `{f.name}` |" in text
            assert f.metadata.get("doc") and f.metadata.get("filled_by") and \
                f.metadata.get("read_by"), f"{cls.__name__}.{f.name} has no reference entry"


def test_cli_reference_is_generated_from_the_parser():
    """Every command and option of the parser is on the page, with its help; each example
    parses with the same parser."""
    gen = _generator("gen_cli")
    text = gen.render()
    _check_generated(ROOT / "docs/reference/cli.md", text)
    parser = gen.parser()
    for name in ("launch", "status", "sweeps", "logs", "cancel", "pull", "relaunch", "monitor",
                 "config", "plugins list", "plugins new"):
        assert f"`chester {name}`" in text, name
    for path, examples in gen.EXAMPLES.items():
        for example in examples:
            argv = shlex.split(example)[1:]
            assert argv[:len(path.split())] == path.split(), example
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"the CLI reference's example does not parse: {example}")


def _doc_command_lines():
    """``(file, line)`` of every ``chester ...`` command in a code block of the docs and the
    README (a comment, a pipe and a ``$ `` prompt taken off)."""
    import re

    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        in_code = False
        for raw in path.read_text().splitlines():
            if raw.lstrip().startswith("```"):
                in_code = not in_code
                continue
            line = raw.strip().removeprefix("$ ")
            if not in_code or not line.startswith("chester "):
                continue
            line = re.split(r"\s+#\s", line, maxsplit=1)[0]
            for part in re.split(r"\s(?:&&|;|\|\|)\s", line):
                part = re.split(r"\s[|>]\s", part, maxsplit=1)[0].strip()
                if part.startswith("chester "):
                    yield path.relative_to(ROOT), part


def test_every_chester_command_in_the_docs_parses():
    """What a reader copies from a guide, a how-to or the README is a command line the CLI
    takes (options, subcommands and their order), not only the reference's examples."""
    parser = _generator("gen_cli").parser()
    seen = 0
    for where, line in _doc_command_lines():
        argv = shlex.split(line)[1:]
        if any(a[:1] in "[<" or a.endswith("...") for a in argv):  # a usage line: placeholders
            continue
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: this command does not parse: {line}")
        seen += 1
    assert seen > 40, seen


def test_config_reference_lists_every_option_of_every_backend():
    text = _generator("gen_config").render()
    _check_generated(ROOT / "docs/reference/config.md", text)
    import attrs

    from chester.config import GLOBAL_KEYS, NOT_SUPPORTED
    from chester.plugin.manager import build_plugin_manager

    for key in GLOBAL_KEYS:
        assert f"`{key}`" in text, key
    backends = build_plugin_manager().backends()
    assert {"local", "ssh", "slurm", "ec2", "autobot"} <= set(backends)
    for name, entry in backends.items():
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        for f in attrs.fields(entry.spec.options_cls):
            assert f"| `{f.name}` |" in section, f"{name}.{f.name}"
    assert set(NOT_SUPPORTED) <= {k for k in GLOBAL_KEYS}


def test_target_protocol_is_generated_from_the_tools():
    text = _generator("gen_target").render()
    _check_generated(ROOT / "docs/target.md", text)
    for tool in ("python -m chester.worker RUN_DIR", "python -m chester.runner",
                 "python -m chester.target status", "stderr_tail"):
        assert tool in text


def test_the_exit_record_is_documented_as_the_runner_writes_it(tmp_path):
    """docs/target.md lists exactly the fields of ``.chester/exit.json`` that the queue
    runner writes."""
    import json

    from chester.target import rundir

    # the one writer, which the queue runner and the node's pre-started worker both call
    rundir.record_exit(tmp_path, -9, {"token": "t1", "attempt": 2})
    written = json.loads((tmp_path / rundir.EXIT).read_text())
    assert written == {"token": "t1", "attempt": 2, "returncode": -9}
    text = (ROOT / "docs/target.md").read_text()
    section = text.split("``.chester/exit.json`` is", 1)[1].split("\n## ", 1)[0]
    section = section.split("``.chester/queued.json``", 1)[0]
    assert re.findall(r"^- ``(\w+)``:", section, flags=re.M) == list(written)


def test_the_queue_record_is_documented_as_the_runner_writes_it(tmp_path):
    """docs/target.md lists exactly the fields of ``.chester/queued.json`` that a queue
    runner writes when it claims a run."""
    import json
    import os

    from chester.target import rundir, runner

    (tmp_path / rundir.META).mkdir()
    (tmp_path / rundir.RUN_JSON).write_text(json.dumps({"token": "t1", "attempt": 1}))
    me = {"runner_pid": os.getpid(), "runner_ticks": rundir.proc_start_time(os.getpid()),
          "host": rundir.hostname()}
    assert runner._claim(tmp_path, me)
    written = json.loads((tmp_path / rundir.QUEUED).read_text())
    assert set(written) == {"runner_pid", "runner_ticks", "host", "token", "queued_at"}
    text = (ROOT / "docs/target.md").read_text()
    section = text.split("``.chester/queued.json`` names", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^- ``(\w+)``:", section, flags=re.M) == list(written)


def test_the_state_diagram_draws_every_state():
    """The state machine's picture (docs/diagrams/states.dot) has a node for every state."""
    from chester.plugin.records import State

    dot = (ROOT / "docs/diagrams/states.dot").read_text()
    drawn = set(re.findall(r"^\s*([a-z]+)\s*\[", dot, flags=re.M))
    assert {s.value for s in State} <= drawn, {s.value for s in State} - drawn


def test_generated_text_shows_roles_as_links_and_placeholders_as_text():
    sys.path.insert(0, str(ROOT / "docs/_ext"))
    try:
        from roles import md_text
    finally:
        sys.path.remove(str(ROOT / "docs/_ext"))
    out = md_text("See :class:`~chester.types.RunStatus` and :func:`launch`; the folder "
                  "<run folder> and `<kept>`.", "chester.launcher.launching")
    assert '<autoref identifier="chester.plugin.records.RunStatus" optional>' \
           "<code>RunStatus</code></autoref>" in out
    assert '<autoref identifier="chester.launcher.launching.launch" optional>' in out
    assert "&lt;run folder>" in out and "`<kept>`" in out
    assert ":class:" not in out and ":func:" not in out


def test_docs_lists_nest_as_python_markdown_reads_them():
    """Python-Markdown nests a list only under 4 spaces: an item indented by 1-3 spaces
    becomes a top-level item (the "Submit" steps once rendered as items 3-9)."""
    bad = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        fenced = False
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif not fenced and re.match(r"^ {1,3}(?:[*+-]|\d+\.) ", line):
                bad.append(f"{page.relative_to(ROOT)}:{n}: {line.strip()[:60]}")
    assert not bad, "indent nested list items by 4 spaces:\n" + "\n".join(bad)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in _bash_blocks(section)]
    assert len(blocks) == 2, blocks
    ci = (ROOT / ".ci/run").read_text().strip().splitlines()
    assert ci[-1].strip() == blocks[1]


def test_the_example_sweep_runs(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".git").mkdir()
    src = (ROOT / "examples/quickstart.py").read_text()
    (project / "quickstart.py").write_text(src)
    r = subprocess.run([sys.executable, "quickstart.py"], cwd=project, capture_output=True,
                       text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                    "HOME": str(tmp_path),
                                                    "CHESTER_SLOTS_DIR": str(tmp_path / "s")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": succeeded") == 6
    results = list((project / "data/train/quickstart").glob("*/result.json"))
    assert len(results) == 6
