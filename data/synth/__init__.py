"""SynthML: the embedded procedural dataset in the exact HumanML3D (or KIT-ML) layout.

Build it::

    python -m data.synth --out runs/demo/SynthML [--dataset humanml3d|kit] [--num 3000] [--seed 0]

Library API (what the data engine and tests use):

- ``program``: ``MotionProgram(actions, relation)`` of ``ActionSpec(family, direction, speed,
  repetitions, limb, amplitude, duration)``; ``to_dict``/``from_dict`` (validated, ``ProgramError``
  names the field); ``family_attributes(family)`` / ``all_family_attributes()`` list the meaningful
  attributes and their allowed values; ``draw_program(rng)`` (one unchecked draw). The schema is
  in that module's docstring.
- ``sampling``: ``sample_program(rng)`` (draws until the nominal length fits ``MAX_PROGRAM_SECONDS``).
- ``body``: ``Subject`` (bone proportions, JSON-safe), ``sample_subject(rng)``.
- ``render``: ``render_program(program, subject, style_seed, dataset) -> (T, J, 3)`` (deterministic;
  style depends only on ``style_seed``, so a perturbed program keeps the subject and style),
  ``render_program_info`` (adds per-action time segments), ``program_duration``.
- ``captions``: ``caption_program(program, rng, n) -> list[Caption]`` (text, ``word/POS`` tokens,
  stated attributes), ``caption_action`` (one action, for sub-clip lines), ``attribute_phrase``
  (e.g. "with the left leg") and ``realize`` (template -> text and tokens).
- ``writer``: ``write_motion(root, motion_id, joints, captions, attributes, dataset)`` writes
  ``new_joint_vecs`` (via ``joints_to_features``), ``new_joints`` (= ``recover_from_ric``), ``texts``
  and ``attributes/<id>.json``; ``read_attributes(root, id)``.
- ``build``: ``build_synthml(out, dataset, num, seed, workers)`` and ``make_motion(seed, index)``.
- ``splits``: the split by program (``program_key``, ``program_atoms``, ``assign_program_splits``)
  and the overlap figures of a split against training (``overlap_figures``, ``split_overlap``).

To re-render a stored motion with a changed attribute::

    attrs = read_attributes(root, "000123")
    prog = MotionProgram.from_dict(attrs["program"])
    wrong = MotionProgram((prog.actions[0].with_(direction="backward"), *prog.actions[1:]), prog.relation)
    joints = render_program(wrong, Subject.from_dict(attrs["subject"]), attrs["style_seed"])
"""
