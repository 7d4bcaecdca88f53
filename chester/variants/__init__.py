"""The sweep model (launcher side): :class:`VariantGenerator` and the plain variants it
expands to (:mod:`.generator`), run names (:mod:`.naming`), the process-stable digest of a
variant (:mod:`.fingerprint`) and ``chester launch``'s ``key=a,b`` sweeps
(:mod:`.overrides`)."""

from chester.variants.generator import AttrDict, VariantDict, VariantGenerator, expand, variant

__all__ = ["AttrDict", "VariantDict", "VariantGenerator", "expand", "variant"]
