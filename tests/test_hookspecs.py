"""The plugin contract itself."""

import inspect

from chester import hookspecs
from chester.hookspecs import LIFECYCLE_HOOKS, NETWORK_HOOKS, ChesterSpecs

SPEC_NAMES = {n for n in dir(ChesterSpecs) if n.startswith("chester_")}


def test_hook_sets_name_real_specs():
    assert NETWORK_HOOKS <= SPEC_NAMES
    assert LIFECYCLE_HOOKS <= SPEC_NAMES
    assert {"chester_backends", "chester_prepare", "chester_submit", "chester_status",
            "chester_pull", "chester_cancel", "chester_logs", "chester_capacity",
            "chester_spend", "chester_register_commands"} == SPEC_NAMES


def test_every_spec_follows_the_docstring_template():
    for name in SPEC_NAMES:
        doc = inspect.getdoc(getattr(ChesterSpecs, name))
        assert doc, name
        for part in ("When:", "Returns:", "Errors:", "Retried:"):
            assert part in doc, (name, part)


def test_lifecycle_hooks_are_firstresult_and_backends_is_a_collector():
    for name in SPEC_NAMES:
        opts = getattr(getattr(ChesterSpecs, name), f"{hookspecs.PROJECT}_spec")
        collector = name in ("chester_backends", "chester_register_commands")
        assert opts["firstresult"] is not collector, name


def test_run_handle_round_trips_through_its_dict_with_every_field():
    import attrs

    from chester.types import RunHandle

    h = RunHandle(run_id=3, token="t", backend="b", local_dir="/l", remote_dir="/r",
                  remote_id="7_1", host="h", extra=(("job", "7"), ("kind", "array")))
    d = h.to_dict()
    assert set(d) == {f.name for f in attrs.fields(RunHandle)}
    assert RunHandle.from_dict(d) == h
