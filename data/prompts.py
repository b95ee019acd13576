"""Everything that renders prompt text: the layout, placeholder substitution, the fixed templates.

Spec: ``sft-and-inference.md`` sections 3.1-3.5 and 6.3. SFT example builders
(``data.sft_examples``), the data engine, and inference/GRPO all render prompts through this module:

* layout (3.1): ``render_prompt`` / ``render_chat`` (``<bos>{SYSTEM}\\n\\nUser: {USER}\\n\\n
  Response:{RESPONSE}<eos>``) and ``render_motionagent_prompt``;
* substitution (3.3, 4.3): ``substitute`` with the ``..`` -> ``.`` merge, ``unfilled_placeholders``;
* test-time prompts (3.3, 3.4): ``build_inference_prompt`` over ``TEST_TEMPLATES``, and
  ``build_cot_prompt`` for the stage-2/3 prompt of one caption;
* fixed strings: system prompts, test templates, ``PLAN_SENTENCES`` (6.3), ``NO_REFINEMENT``;
* paraphrase pools (3.5): ``PromptPools``, ``BUILTIN_POOLS``, ``load_prompt_pools``.

Strings a released checkpoint depends on (the system prompts, the test-time user templates, the
stage-2 CoT prompts and plan sentences) are kept byte-exact, typos included ("Refien", "indide",
B12). The large paraphrase pools of the released ``prompt_template-2.json`` are a licensed data
asset we do not copy: ``BUILTIN_POOLS`` holds our own wording with the same 18 keys and placeholder
rules (every entry contains its placeholders exactly once, no duplicates), each pool starting with
the quoted test prompt where the spec says it is entry #1 (#2 for ``prompt_analysis``). Users who
have the original file load it with ``PromptPools.from_file`` (checked against the published sha256).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from data.motion_tokens import MOTION_START

GENERAL_SYSTEM_PROMPT = (
    "You are an assistant who helps users understand or generate 3D human motion representations."
)
MOTIONAGENT_SYSTEM_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)
MOTIONAGENT_MOGEN_TEMPLATE = (
    "### Instruction:\nGenerate a motion matching the following input human motion description"
    "\n\n### Input:\n<Goal_Caption>"
)

COT_V2_TEMPLATE = (
    "Given a goal text describing a human motion, your job includes the following parts: (1) "
    "analyzing the goal text and clearly describing the reasoning process to identify key elements; "
    "(2) performing multiple rounds of generation and self-assessment until a satisfactory motion is "
    "achieved; (3) outputting the final motion based on the reasoning process. Response format: Show "
    "initial analysis and generation-assessment cycles indide <think> and </think> tags; Place the "
    "final motion inside <answer> and </answer> tags.\nGoal Text: <Goal_Caption>"
)
COT_WO_ANSWER_TEMPLATES = (
    "Given a goal text describing a human motion, perform multi-step thinking to obtain the goal "
    "motion: (1) analyzing the goal text and clearly describing the reasoning process to identify key "
    "elements; (2) performing multiple rounds of generation and self-assessment until a satisfactory "
    "motion is achieved. Put all your response in <think> and </think> tags, and make a plan before "
    "each step.\nGoal Text: <Goal_Caption>",
    "Given a text outlining a human motion objective, employ a step-by-step thought process to "
    "realize the motion: (1) analyze the text, providing a clear explanation of the reasoning to "
    "identify essential elements; (2) conduct several rounds of motion generation and "
    "self-assessment until the motion is satisfactory. Wrap all responses in <think> and </think> "
    "tags, and formulate a plan before each step.\nGoal Text: <Goal_Caption>",
    "Given a goal text describing a desired human motion, use a multi-step approach to accomplish "
    "the motion: (1) parse the goal text, articulating the reasoning to highlight key components; (2) "
    "iterate through motion generation and self-evaluation until the motion satisfies the goal. "
    "Include all responses within <think> and </think> tags, and prepare a plan before each step."
    "\nGoal Text: <Goal_Caption>",
)
COT_V3_TEMPLATE = COT_WO_ANSWER_TEMPLATES[1]
MOTION_R1_TEMPLATE = (
    "Given a goal text describing a human motion, your job includes the following parts: (1) "
    "analyzing the goal text and clearly describing the reasoning process to identify key elements; "
    "(2) outputting the motion based on the reasoning process. Put all your response in <think> and "
    "</think> tags, and make a plan before each step.\nGoal Text: <Goal_Caption>"
)

T2M_TEMPLATE = "Generate a motion that depicts <Goal_Caption>."
PROMPT_ANALYSIS_TEMPLATE = (
    "Determine the critical aspects to address prior to generating a motion that represents <Goal_Caption>."
)
REFINE_INSTRUCTION_TEMPLATE = (
    "Motion: <Generated_Motion>. Goal text: <Goal_Caption>. Determine how to refine the generated "
    "motion for better alignment."
)
INSTRUCTED_REFINEMENT_TEMPLATE = (
    "Motion: <Generated_Motion>. Goal text: <Goal_Caption>. Refine the motion according to the "
    "instruction: <Refinement_Instruction>."
)
M2T_TEMPLATE = "<Goal_Motion>\nProvide a detailed description of the motion."

TEST_TEMPLATES: dict[str, tuple[str, str]] = {
    "t2m": (GENERAL_SYSTEM_PROMPT, T2M_TEMPLATE),
    "prompt_analysis": (GENERAL_SYSTEM_PROMPT, PROMPT_ANALYSIS_TEMPLATE),
    "refine_instruction": (GENERAL_SYSTEM_PROMPT, REFINE_INSTRUCTION_TEMPLATE),
    "instructed_motion_refinement": (GENERAL_SYSTEM_PROMPT, INSTRUCTED_REFINEMENT_TEMPLATE),
    "m2t": (GENERAL_SYSTEM_PROMPT, M2T_TEMPLATE),
    "unified_mogen_cot_v2": (GENERAL_SYSTEM_PROMPT, COT_V2_TEMPLATE),
    "unified_mogen_cot_v3": (GENERAL_SYSTEM_PROMPT, COT_V3_TEMPLATE),
    # B11: the reference prefixes this one with "User: ", giving "User: User: " once assembled.
    "unified_mogen_cot_v3_wo_assess_refine": (GENERAL_SYSTEM_PROMPT, "User: " + MOTION_R1_TEMPLATE),
    "t2m_motionagent": (MOTIONAGENT_SYSTEM_PROMPT, MOTIONAGENT_MOGEN_TEMPLATE),
}
"""Test task key -> (system, user template), spec section 3.4 (byte-exact)."""

PLAN_SENTENCES: dict[str, str] = {
    "prompt_analysis": "I need to analyze the goal and identify the critical aspects to generate the motion.",
    "generation": "I need to generate a motion according to the previous analysis.",
    "assessment": (
        "I need to assess the alignment between the generated motion and the goal text, then provide "
        "specific refinement instructions for improvement."
    ),
    "refinement": "I need to refine the motion according to the instruction.",
    "finish_thinking": "I need to finish thinking as the satisfactory motion is generated.",
}
"""Stage-2 planner sentences, spec section 6.3 (byte-exact)."""

NO_REFINEMENT = "No refinements needed."
"""Refinement text for a motion that already matches its goal (stop signal)."""

ORIGINAL_TEMPLATE_SHA256 = "fbade3770f9fcbff85313312a2a00686c82ea2e38934abf40f21aa31b5d7f5f4"
"""sha256 of the released ``SFT/HumanML3D/dataset/prompt_template-2.json``."""

GM, GC, RI, GEN = "<Goal_Motion>", "<Goal_Caption>", "<Refinement_Instruction>", "<Generated_Motion>"
ARI = "<Analysis_Refinement_Instruction>"

POOL_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "<Motion2X_Template>": (GM,),
    "<Text2Motion_Template>": (GC,),
    "<Analysis2Motion_Template>": (GC,),
    "<Goal_Analysis_Template>": (GC,),
    "<Text_Motion2Alignment_Analysis_Template>": (GEN, GC),
    "<Text_Motion2Refinement_Instruction_Template>": (GEN, GC),
    "<Text_Motion2Analysis_Instruction_Template>": (GEN, GC),
    "<Direct_Motion_Refinement_Template>": (GEN, GC),
    "<Instructed_Motion_Refinement_Template>": (GEN, GC, RI),
    "<Instructed_Motion_Refinement_wo_Goal_Template>": (GEN, RI),
    "<Analysis_Instructed_Motion_Refinement_Template>": (GEN, GC, ARI),
    "<Generate_Assess_Refien_Template>": (GC,),
    "<Generate_Assess_Refien_Template_wo_Answer>": (GC,),
    "<Generate_Assess_Refien_Template2>": (GC,),
    "<General_System_Prompt>": (),
    "<Motion_R1_Template_wo_Answer>": (GC,),
    "<MotionAgent_System_Prompt>": (),
    "<MotionAgent_Mogen_Template>": (GC,),
}
"""The 18 pool keys (file order) and the placeholders each entry must contain exactly once."""

BUILTIN_POOLS: dict[str, tuple[str, ...]] = {
    "<Motion2X_Template>": (
        M2T_TEMPLATE,
        f"{GM}\nDescribe what the person in this motion is doing.",
        f"{GM}\nWrite a caption for this movement.",
        f"Explain the movement shown here: {GM}",
        f"What action does this motion sequence show? {GM}",
        f"{GM}\nSummarise the body movement in one sentence.",
        f"Give a short text description of the following motion: {GM}",
        f"{GM}\nTell me what the human is doing in this clip.",
        f"Caption the human motion below.\n{GM}",
        f"{GM}\nDescribe the movement, including direction and speed if visible.",
    ),
    "<Text2Motion_Template>": (
        T2M_TEMPLATE,
        f"Create a human motion in which {GC}.",
        f"Produce a movement that shows {GC}.",
        f"Show me a motion where {GC}.",
        f"Please animate the following: {GC}.",
        f"Generate the body movement described by: {GC}.",
        f"Make a 3D human motion matching the text: {GC}.",
        f"Synthesize a motion sequence for this description: {GC}.",
        f"I would like to see a motion in which {GC}.",
        f"Turn this description into a motion: {GC}",
    ),
    "<Analysis2Motion_Template>": (
        f"Generate a motion that meets the goal: {GC}.",
        f"Create a movement that meets the goal: {GC}.",
        f"Design a gesture that aligns with the goal: {GC}.",
        f"Produce an action that aligns with the goal: {GC}.",
    ),
    "<Goal_Analysis_Template>": (
        f"List the key elements a motion must contain to match {GC}.",
        PROMPT_ANALYSIS_TEMPLATE,
        f"Before generating a motion for {GC}, identify its essential aspects.",
        f"Analyze the goal text {GC} and explain what the motion needs to show.",
        f"Which body parts, directions and timings matter for a motion depicting {GC}?",
        f"Break down the description {GC} into the components a motion should have.",
        f"Explain the important features to capture when animating {GC}.",
        f"What should a generated motion get right to represent {GC}?",
    ),
    "<Text_Motion2Alignment_Analysis_Template>": (
        f"Motion: {GEN}. Goal text: {GC}. Assess how well the motion matches the goal text.",
        f"Compare the motion {GEN} with the description {GC} and explain any mismatch.",
        f"Here is a generated motion: {GEN}. The target is {GC}. Evaluate their alignment.",
        f"Goal: {GC}. Generated motion: {GEN}. How well does the motion follow the goal?",
        f"Judge whether the motion {GEN} depicts {GC}, and describe the differences.",
        f"Motion: {GEN}. Target description: {GC}. Analyze the text-motion alignment.",
        f"Check the motion {GEN} against the text {GC} and report what is right and wrong.",
        f"Evaluate this motion: {GEN}. It should show {GC}. Point out any discrepancy.",
    ),
    "<Text_Motion2Refinement_Instruction_Template>": (
        REFINE_INSTRUCTION_TEMPLATE,
        f"Motion: {GEN}. Target description: {GC}. What should be changed in the motion?",
        f"The motion {GEN} was generated for {GC}. Give an instruction to improve it.",
        f"Goal: {GC}. Generated motion: {GEN}. Suggest how to edit the motion to match the goal.",
        f"Compare {GEN} with {GC} and tell me how to correct the motion.",
        f"Given the motion {GEN} and the text {GC}, write a refinement instruction.",
        f"Here is a motion: {GEN}. It should show {GC}. How should it be modified?",
        f"Motion: {GEN}. Goal text: {GC}. Provide an edit instruction for better alignment.",
    ),
    "<Text_Motion2Analysis_Instruction_Template>": (
        f"Motion: {GEN}. Goal text: {GC}. Analyze the mismatch and suggest a fix.",
        f"Assess the motion {GEN} against {GC}, then explain how to refine it.",
        f"Goal: {GC}. Motion: {GEN}. Describe the alignment and propose an improvement.",
        f"Review the motion {GEN} for the goal {GC}: what is wrong and how should it change?",
        f"Evaluate {GEN} with respect to {GC} and give a refinement plan.",
        f"Motion: {GEN}. Description: {GC}. Give an assessment followed by an instruction.",
    ),
    "<Direct_Motion_Refinement_Template>": (
        f"Motion: {GEN}. Goal text: {GC}. Refine the motion so that it matches the goal text.",
        f"Motion: {GEN}. Target caption: {GC}. Please adjust the motion to fit the caption.",
        f"Improve the motion {GEN} so that it depicts {GC}.",
        f"Here is a motion: {GEN}. Edit it to better show {GC}.",
        f"Goal: {GC}. Current motion: {GEN}. Produce a corrected motion.",
        f"Fix the motion {GEN} to align with the description {GC}.",
        f"Motion: {GEN}. Desired behaviour: {GC}. Output a refined motion.",
        f"Modify {GEN} so that the result matches {GC}.",
    ),
    "<Instructed_Motion_Refinement_Template>": (
        INSTRUCTED_REFINEMENT_TEMPLATE,
        f"Motion: {GEN}. Target: {GC}. Apply this edit to the motion: {RI}.",
        f"Edit the motion {GEN} for the goal {GC} by following the instruction: {RI}.",
        f"Goal text: {GC}. Motion: {GEN}. Instruction: {RI}. Produce the refined motion.",
        f"Here is a motion: {GEN}. It should show {GC}. Change it as follows: {RI}.",
        f"Refine the motion {GEN} toward {GC} by following this instruction: {RI}",
        f"Motion: {GEN}. Description: {GC}. Refinement instruction: {RI}. Output the new motion.",
        f"Update {GEN} so that it matches {GC}, using this guidance: {RI}.",
    ),
    "<Instructed_Motion_Refinement_wo_Goal_Template>": (
        f"Motion: {GEN}. Refine the motion according to the instruction: {RI}.",
        f"Edit the motion {GEN} as follows: {RI}.",
        f"Here is a motion: {GEN}. Apply this change: {RI}.",
        f"Modify the motion {GEN} by following this instruction: {RI}",
        f"Motion: {GEN}. Instruction: {RI}. Output the edited motion.",
        f"Change {GEN} according to this guidance: {RI}.",
    ),
    "<Analysis_Instructed_Motion_Refinement_Template>": (
        f"Motion: {GEN}. Goal text: {GC}. Refine the motion according to the analysis: {ARI}.",
        f"Using the analysis {ARI}, refine the motion {GEN} so that it depicts {GC}.",
        f"Goal: {GC}. Motion: {GEN}. Analysis and instruction: {ARI}. Produce the refined motion.",
        f"Here is a motion: {GEN}. It should show {GC}. Improve it based on: {ARI}.",
        f"Edit {GEN} toward {GC}, following this assessment: {ARI}.",
        f"Motion: {GEN}. Description: {GC}. Feedback: {ARI}. Output the corrected motion.",
    ),
    "<Generate_Assess_Refien_Template>": (COT_V2_TEMPLATE,),
    "<Generate_Assess_Refien_Template_wo_Answer>": COT_WO_ANSWER_TEMPLATES,
    "<Generate_Assess_Refien_Template2>": (
        COT_V2_TEMPLATE,
        "Given a goal text describing a human motion, reason step by step: (1) analyze the goal text "
        "to find its key elements; (2) generate a motion, assess it, and refine it until it is "
        "satisfactory; (3) give the final motion. Keep the reasoning inside <think> and </think> tags "
        "and the final motion inside <answer> and </answer> tags.\nGoal Text: <Goal_Caption>",
        "Given a text that describes a target human motion, work in stages: first analyze the text "
        "and name its essential elements, then alternate motion generation and self-assessment until "
        "the motion fits, and finally output it. Put the reasoning in <think> and </think> tags and "
        "the final motion in <answer> and </answer> tags.\nGoal Text: <Goal_Caption>",
    ),
    "<General_System_Prompt>": (GENERAL_SYSTEM_PROMPT,),
    "<Motion_R1_Template_wo_Answer>": (MOTION_R1_TEMPLATE,),
    "<MotionAgent_System_Prompt>": (MOTIONAGENT_SYSTEM_PROMPT,),
    "<MotionAgent_Mogen_Template>": (MOTIONAGENT_MOGEN_TEMPLATE,),
}
"""Our own paraphrase pools (same keys/placeholder rules as the released file)."""


class PromptPoolError(ValueError):
    """A prompt-pool file or entry breaks the key/placeholder rules; the message names them."""


@dataclass(frozen=True)
class PromptPools:
    """Pool key -> interchangeable strings; a turn whose value is a key gets one random entry."""

    pools: Mapping[str, tuple[str, ...]]
    source: str = "builtin"

    def __post_init__(self) -> None:
        object.__setattr__(self, "pools", {k: tuple(v) for k, v in self.pools.items()})
        self.validate()

    @classmethod
    def builtin(cls) -> PromptPools:
        """Our own pools (no licensed text beyond the strings the spec quotes)."""
        return cls(BUILTIN_POOLS, source="builtin")

    @classmethod
    def from_file(
        cls, path: str | Path, expected_sha256: str | None = ORIGINAL_TEMPLATE_SHA256
    ) -> PromptPools:
        """Load a ``prompt_template-2.json``-style file.

        Args:
            path: JSON object mapping pool keys to lists of strings.
            expected_sha256: checked when given (default: the released file's hash); ``None`` skips it.

        Raises:
            PromptPoolError: missing file, hash mismatch, bad JSON, or a pool breaking the rules.
        """
        p = Path(path)
        if not p.is_file():
            raise PromptPoolError(f"prompt template file not found: {p}")
        raw = p.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            released = " (the released file's)" if expected_sha256 == ORIGINAL_TEMPLATE_SHA256 else ""
            raise PromptPoolError(
                f"{p}: sha256 {digest} differs from the expected prompt_template_sha256 "
                f"{expected_sha256}{released}; set prompt_template_sha256 to this file's digest, or to "
                "null (--prompt-template-sha256 none) to accept it without a check"
            )
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as err:
            raise PromptPoolError(f"{p}: invalid JSON: {err}") from err
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
        ):
            raise PromptPoolError(f"{p}: expected an object mapping keys to lists of strings")
        return cls(data, source=str(p))

    def validate(self) -> None:
        """Every known key present, non-empty, no duplicates, placeholders exactly once."""
        missing = [k for k in POOL_PLACEHOLDERS if k not in self.pools]
        if missing:
            raise PromptPoolError(f"{self.source}: missing pool key(s) {missing}")
        for key, entries in self.pools.items():
            if not entries:
                raise PromptPoolError(f"{self.source}: pool {key} is empty")
            if len(set(entries)) != len(entries):
                raise PromptPoolError(f"{self.source}: pool {key} has duplicate entries")
            for i, entry in enumerate(entries):
                for ph in POOL_PLACEHOLDERS.get(key, ()):
                    if entry.count(ph) != 1:
                        raise PromptPoolError(
                            f"{self.source}: pool {key} entry #{i + 1} contains {ph} "
                            f"{entry.count(ph)} times (must be exactly once): {entry[:80]!r}"
                        )

    def sample(self, key: str, rng: random.Random) -> str:
        """One uniformly random entry of pool ``key``."""
        if key not in self.pools:
            raise PromptPoolError(f"unknown prompt pool key {key!r}; known: {sorted(self.pools)}")
        return rng.choice(self.pools[key])

    def fill_turn(self, turn: str, rng: random.Random) -> str:
        """Replace every pool key occurring in ``turn`` (in pool order) by a random entry."""
        for key in self.pools:
            if key in turn:
                turn = turn.replace(key, self.sample(key, rng))
        return turn


def load_prompt_pools(path: str | None = None, sha256: str | None = ORIGINAL_TEMPLATE_SHA256) -> PromptPools:
    """Config helper: the original file when ``path`` is given, else the built-in pools."""
    return PromptPools.builtin() if not path else PromptPools.from_file(path, expected_sha256=sha256)


# --------------------------------------------------------------------------------------------------
# Layout and substitution (sections 3.1, 3.3, 4.3)

BOS, EOS = "<bos>", "<eos>"
"""Literal sequence markers of the layout (``<eos>`` tokenises to the eos id)."""


class PromptError(ValueError):
    """A prompt cannot be rendered (unknown test task, placeholder left); the message names it."""


def render_prompt(system: str, user: str) -> str:
    """``"{SYSTEM}\\n\\nUser: {USER}\\n\\n Response:"`` (no ``<bos>``; ``--prompt-w-response``)."""
    return f"{system}\n\nUser: {user}\n\n Response:"


def render_chat(system: str, user: str, response: str | None = None) -> str:
    """The exact training/eval text: ``<bos>`` + prompt + ``response`` + ``<eos>``.

    With ``response=None`` this is the inference prompt (ending in ``" Response:"``). For stage 2
    pass the trace *without* its final ``<eos>`` tag (this function appends it).
    """
    text = BOS + render_prompt(system, user)
    return text if response is None else text + response + EOS


def render_motionagent_prompt(system: str, user: str) -> str:
    """Motion-Agent layout (test task ``t2m_motionagent``): ``{S}\\n\\n{U}\\n\\nResponse: <Motion>``."""
    return f"{system}\n\n{user}\n\nResponse: {MOTION_START}"


def substitute(
    template: str, values: Mapping[str, str], text_keys: Sequence[str] = (), *, text_first: bool = False
) -> str:
    """Replace placeholders, merging ``..`` to ``.`` after each text substitution.

    Training (section 4.3 step 5) replaces the motion (non-text) keys first, then each text key;
    evaluation prompts (section 3.3, ``text_first=True``) replace the text keys first. After each
    text substitution the whole string gets one ``str.replace("..", ".")`` pass, as the reference
    does, so a caption ending in a period followed by a template's period yields one period (and
    ``"..."`` becomes ``".."``, not ``"."``).
    """

    def motion_keys(s: str) -> str:
        for key, val in values.items():
            if key not in text_keys:
                s = s.replace(key, val)
        return s

    if not text_first:
        template = motion_keys(template)
    for key in text_keys:
        if key in values and key in template:
            template = template.replace(key, values[key]).replace("..", ".")
    if text_first:
        template = motion_keys(template)
    return template


_PLACEHOLDER_RE = re.compile(r"<(?!Motion_\d)[A-Z][A-Za-z0-9]*_[A-Za-z0-9_]+>")


def unfilled_placeholders(text: str) -> list[str]:
    """Placeholders such as ``<Goal_Caption>`` still in ``text`` (sorted, unique; motion tokens excluded)."""
    return sorted(set(_PLACEHOLDER_RE.findall(text)))


def build_inference_prompt(
    test_task: str, values: Mapping[str, str], text_keys: Sequence[str] | None = None
) -> str:
    """Prompt string (no ``<bos>``) for a test task of section 3.4, with generation forcing.

    Args:
        test_task: a key of ``TEST_TEMPLATES``.
        values: placeholder -> string; motion values are full spans ``<Motion>...</Motion>``.
        text_keys: keys substituted as text (``..``-merge); default: every key not ending in
            ``_Motion>``.

    ``t2m`` and ``instructed_motion_refinement`` end with ``<Motion>`` (section 3.3); ``t2m_motionagent``
    uses its own layout.

    Raises:
        PromptError: unknown ``test_task``, or a placeholder of the template left unfilled.
    """
    if test_task not in TEST_TEMPLATES:
        raise PromptError(f"unknown test task {test_task!r}; known: {sorted(TEST_TEMPLATES)}")
    system, user = TEST_TEMPLATES[test_task]
    if text_keys is None:
        text_keys = [k for k in values if not k.endswith("_Motion>")]
    user = substitute(user, values, text_keys, text_first=True)
    left = unfilled_placeholders(user)
    if left:
        raise PromptError(f"test task {test_task}: unsubstituted placeholder(s) {left} remain")
    if test_task == "t2m_motionagent":
        return render_motionagent_prompt(system, user)
    prompt = render_prompt(system, user)
    if test_task in ("t2m", "instructed_motion_refinement"):
        prompt += MOTION_START
    return prompt


def build_cot_prompt(caption: str, template: str | None = None) -> str:
    """The stage-2/3 prompt (no ``<bos>``) for one goal caption.

    ``template`` defaults to the fixed ``unified_mogen_cot_v3`` user template (section 3.4).
    """
    system, user = TEST_TEMPLATES["unified_mogen_cot_v3"]
    return render_prompt(system, substitute(template or user, {GC: caption}, [GC]))
