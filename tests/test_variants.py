"""VariantGenerator: the seed's API without its bugs."""

import pytest

from chester.run_exp import VariantGenerator as SeedVG
from chester.run_exp import variant
from chester.variants import VariantGenerator


def test_product_order_last_key_fastest():
    vg = VariantGenerator()
    vg.add("a", [1, 2])
    vg.add("b", ["x", "y"])
    assert [(v["a"], v["b"]) for v in vg.variants()] == [(1, "x"), (1, "y"), (2, "x"), (2, "y")]
    assert vg.size == 4 and vg.variations() == ["a", "b"]
    assert vg.variants()[0].a == 1  # attribute access


def test_dependent_values_and_key_order():
    vg = VariantGenerator()
    vg.add("h", lambda model, lr: [f"{model}-{lr}"])
    vg.add("model", ["small", "big"])
    vg.add("lr", lambda model: [0.1] if model == "small" else [0.01, 0.001])
    vs = vg.variants()
    assert next(list(v) for v in vg.ivariants()) == ["model", "lr", "h"]
    assert [v["h"] for v in vs] == ["small-0.1", "big-0.01", "big-0.001"]
    assert vg.size == 3
    assert vg.variations() == ["model"]


def test_hidden_keys_work_and_are_left_out_of_names():
    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.2])
    vg.add("seed", [1, 2], hide=True)
    vs = vg.variants()
    assert len(vs) == 4 and vs[0]["seed"] == 1
    assert vg.variations() == ["lr"]
    assert vg.variant_dict(vs[0]).dump() == {"lr": 0.1}


def test_cycle_and_unknown_key_are_clear_errors():
    vg = VariantGenerator()
    vg.add("a", lambda b: [b])
    vg.add("b", lambda a: [a])
    with pytest.raises(ValueError, match="cycle: a depends on b; b depends on a"):
        vg.variants()
    vg2 = VariantGenerator()
    vg2.add("a", lambda nope: [1])
    with pytest.raises(ValueError, match="unknown key.*nope"):
        vg2.variants()


def test_empty_sweep_is_empty():
    assert VariantGenerator().variants() == []
    assert VariantGenerator().size == 0


def test_update_replaces_or_adds():
    vg = VariantGenerator()
    vg.add("a", [1, 2])
    vg.update("a", [3])
    vg.update("b", [4, 5])
    assert [(v["a"], v["b"]) for v in vg.variants()] == [(3, 4), (3, 5)]
    with pytest.raises(ValueError, match="already added"):
        vg.add("a", [1])


def test_variant_decorator_bare_and_with_arguments():
    class VG(SeedVG):
        @variant
        def lr(self):
            return [0.1, 0.2]

        @variant(hide=True)
        def seed(self, lr):
            return [1] if lr == 0.1 else [2, 3]

    vg = VG()
    assert [(v["lr"], v["seed"]) for v in vg.variants()] == [(0.1, 1), (0.2, 2), (0.2, 3)]
    assert vg.variations() == ["lr"]


def test_variants_are_not_mutated_and_randomized_is_seeded():
    vg = VariantGenerator()
    vg.add("a", list(range(10)))
    base = vg.variants()
    assert vg.variants(randomized=True, seed=3) == vg.variants(randomized=True, seed=3)
    assert sorted(v["a"] for v in vg.variants(randomized=True)) == list(range(10))
    # the earlier chester's markers: the first variant and the last one only
    assert [(v.get("chester_first_variant"), v.get("chester_last_variant")) for v in base] == \
        [(True, None)] + [(None, None)] * 8 + [(None, True)]
    shuffled = vg.variants(randomized=True, seed=3)
    assert shuffled[0]["chester_first_variant"] and shuffled[-1]["chester_last_variant"]
    assert sum("chester_first_variant" in v or "chester_last_variant" in v
               for v in shuffled) == 2
    assert all(not set(v) & {"chester_first_variant", "chester_last_variant"}
               for v in vg.ivariants())


def test_one_variant_carries_both_markers_as_upstream_tests_check():
    vg = SeedVG()
    vg.add("learning_rate", [0.001, 0.01])
    vg.add("batch_size", [32, 64])
    vg.add("hidden_dim", lambda batch_size: [batch_size * 2])
    variants = vg.variants()
    assert len(variants) == 4
    assert all(v.hidden_dim == v.batch_size * 2 for v in variants)
    assert variants[0].get("chester_first_variant", False)
    assert variants[-1].get("chester_last_variant", False)
    one = VariantGenerator().add("x", [1]).variants()
    assert one == [{"x": 1, "chester_first_variant": True, "chester_last_variant": True}]
