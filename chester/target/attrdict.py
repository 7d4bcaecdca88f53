"""``AttrDict``: a dict whose keys read as attributes. Tiny on purpose: the worker
unpickles it on every target."""


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
