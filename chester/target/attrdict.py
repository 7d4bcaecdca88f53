"""``AttrDict``: a dict whose keys read as attributes, and the seed's variant markers.
Tiny on purpose: the worker unpickles it on every target."""

#: Keys ``VariantGenerator.variants()`` sets on its first and last variant, as the earlier
#: chester did (``run_experiment_lite`` read them to sync once and submit at the end). They
#: mark a variant's place in a list, not what the run is: never part of a run's identity
#: (fingerprint, name, ``variant.json``) nor of a command's arguments.
MARKERS = ("chester_first_variant", "chester_last_variant")


def without_markers(variant):  # type: ignore[no-untyped-def]
    """``variant`` as a plain dict without :data:`MARKERS` (the same object when it has none)."""
    if not any(k in variant for k in MARKERS):
        return variant
    return {k: v for k, v in variant.items() if k not in MARKERS}


class AttrDict(dict):
    """A plain dict whose keys can also be read as attributes (``v.lr``)."""

    def __getattr__(self, key):  # type: ignore[no-untyped-def]
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):  # type: ignore[no-untyped-def]
        self[key] = value

    def __delattr__(self, key):  # type: ignore[no-untyped-def]
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (AttrDict, (dict(self),))
