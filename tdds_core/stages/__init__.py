"""The pipeline stages, one module each: ``train_full``, ``score``, ``select``, ``reprune``,
``coreset``, ``evaluate``, ``report``. Each registers a :class:`~tdds_core.stage_registry.Stage`
when imported; the registry imports a stage's module the first time the stage is looked up, so a
KFP task loads only its own stage (the score task never imports torch).

Adding a stage is one module here (or a plugin module named in ``$TDDS_PLUGINS``) that calls
:func:`~tdds_core.stage_registry.register_stage`; ``tdds grid`` and the KFP pipeline both run every
registered stage in order. What stages share lives below them: :mod:`tdds_core.stage_registry`
(the registry, the state passed between stages) and :mod:`tdds_core.artifacts` (where an artifact
lives, how it is written, found and fetched)."""
