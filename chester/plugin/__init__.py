"""The plugin kit: the hook contract (:mod:`.hookspecs`), the plugin manager and
``hookimpl`` (:mod:`.manager`), the records that cross the plugin boundary
(:mod:`.records`), errors and retry policies (:mod:`.errors`, :mod:`.retry`), routing of
hooks to the owning backend (:mod:`.dispatch`), the backend conformance suite
(:mod:`.testing`) and the ``chester plugins new`` scaffold (:mod:`.scaffold`)."""
