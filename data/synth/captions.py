"""Caption grammar for SynthML: paraphrases with ``word/POS`` tokens from the grammar itself.

Templates are strings of words; ``V:lemma`` is a verb conjugated for the clause (``walks`` /
``walking``), ``word|TAG`` forces a tag where a word is ambiguous (``left|NOUN`` in "to the left",
``left|ADJ`` in "his left hand"), and ``,`` is punctuation (kept in the text, dropped from the
tokens). Every other word must be in ``LEXICON`` (word -> (spaCy universal tag, lemma)); NOUN and
VERB tokens are written as their lemma except ``left``, as in the HumanML3D text processing
(``motion-vq-evaluation.md`` section 1.7), so the evaluator's word vectorizer reads them the same way.

Each caption records which attributes it states, as ``"<action index>.<attribute>"`` names
(``"0.family"``, ``"0.direction"``, ``"1.limb"``, ...). Captions are deliberately less specific at
times: speed, count, amplitude and sometimes limb or direction may be left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.synth.program import FAMILIES, ActionSpec, MotionProgram

# ------------------------------------------------------------------------------------------------
# Lexicon
# ------------------------------------------------------------------------------------------------


def _entries(tag: str, words: str) -> dict[str, tuple[str, str]]:
    """``"word"`` or ``"word:lemma"`` items -> {word: (tag, lemma)}."""
    out = {}
    for item in words.split():
        word, _, lemma = item.partition(":")
        out[word] = (tag, lemma or word)
    return out


LEXICON: dict[str, tuple[str, str]] = {
    **_entries("DET", "a an the his her their both each all"),
    **_entries("AUX", "is"),
    **_entries("PRON", "someone he she they himself herself themselves something"),
    **_entries("CCONJ", "and"),
    **_entries("SCONJ", "while as before after"),
    **_entries("ADP", "to in on with at of into from above over like beside"),
    **_entries("NUM", "one two three four ninety"),
    **_entries(
        "NOUN",
        "person man woman figure human individual circle hand hands:hand arm arms:arm leg legs:leg foot "
        "feet:foot fist fists:fist head side sides:side step steps:step squat squats:squat kick kicks:kick "
        "jacks:jack time times:time pace ball object air chair seat position place spot shoulder height "
        "toes:toe degrees:degree line jump punches:punch punch front body knees:knee turn quarter "
        "direction way curve jack seconds:second",
    ),
    **_entries(
        "ADV",
        "forward forwards backward backwards ahead straight slowly quickly fast rapidly steadily then once "
        "twice up down around sideways back together high low deeply slightly lightly briskly first again "
        "counterclockwise clockwise very overhead out away gently repeatedly",
    ),
    **_entries(
        "ADJ",
        "slow quick normal moderate small big deep shallow full few short single steady several "
        "seated multiple little left right same",
    ),  # fmt: skip
    **_entries("PART", "not"),
}
# Verb surface forms -> lemma (3rd person singular, -ing and base forms).
_VERBS: dict[str, tuple[str, str]] = {}
for _lemma, _s3, _ing in (
    ("walk", "walks", "walking"), ("run", "runs", "running"), ("jog", "jogs", "jogging"),
    ("stroll", "strolls", "strolling"), ("jump", "jumps", "jumping"), ("hop", "hops", "hopping"),
    ("wave", "waves", "waving"), ("kick", "kicks", "kicking"), ("squat", "squats", "squatting"),
    ("crouch", "crouches", "crouching"), ("turn", "turns", "turning"), ("spin", "spins", "spinning"),
    ("sit", "sits", "sitting"), ("stand", "stands", "standing"), ("get", "gets", "getting"),
    ("rise", "rises", "rising"), ("take", "takes", "taking"), ("raise", "raises", "raising"),
    ("lift", "lifts", "lifting"), ("punch", "punches", "punching"), ("throw", "throws", "throwing"),
    ("step", "steps", "stepping"), ("shuffle", "shuffles", "shuffling"), ("move", "moves", "moving"),
    ("clap", "claps", "clapping"), ("bend", "bends", "bending"), ("bow", "bows", "bowing"),
    ("lean", "leans", "leaning"), ("touch", "touches", "touching"), ("do", "does", "doing"),
    ("perform", "performs", "performing"), ("make", "makes", "making"), ("go", "goes", "going"),
    ("lower", "lowers", "lowering"), ("spread", "spreads", "spreading"), ("swing", "swings", "swinging"),
    ("hold", "holds", "holding"), ("stretch", "stretches", "stretching"), ("reach", "reaches", "reaching"),
    ("march", "marches", "marching"), ("sprint", "sprints", "sprinting"), ("circle", "circles", "circling"),
    ("alternate", "alternates", "alternating"), ("toss", "tosses", "tossing"),
):  # fmt: skip
    _VERBS[_lemma] = (_s3, _ing)
    for _w in (_lemma, _s3, _ing):
        LEXICON.setdefault(_w, ("VERB", _lemma))
    LEXICON[_s3] = ("VERB", _lemma)
    LEXICON[_ing] = ("VERB", _lemma)

SPACY_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
              "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE")  # fmt: skip
"""spaCy universal tags (the vectorizer maps the ones outside its 15 names to OTHER)."""


@dataclass(frozen=True)
class Caption:
    """One caption line: text, ``word/POS`` tokens, stated attributes and the sub-clip span."""

    text: str
    tokens: tuple[str, ...]
    stated: tuple[str, ...]
    """Names ``"<action>.<attribute>"`` the caption states (plus ``"relation"`` for pairs)."""
    start: float = 0.0
    """Sub-clip start in seconds; ``start == end == 0`` means the whole clip."""
    end: float = 0.0

    def to_line(self) -> str:
        """``caption#tokens#from#to`` as in HumanML3D ``texts/<id>.txt``."""
        return f"{self.text}#{' '.join(self.tokens)}#{self.start}#{self.end}"

    def to_dict(self) -> dict:
        return {"text": self.text, "stated": list(self.stated), "from": self.start, "to": self.end}


def realize(template: str, form: str = "s3") -> tuple[str, tuple[str, ...]]:
    """Template -> (text, tokens). ``form``: ``s3`` (walks), ``ing`` (walking) or ``base`` (walk)."""
    words, tokens = [], []
    for item in template.split():
        if item == ",":
            if words:
                words[-1] += ","
            continue
        tag = None
        if "|" in item:
            item, tag = item.split("|")
        if item.startswith("V:"):
            lemma = item[2:]
            if lemma not in _VERBS:
                raise KeyError(f"caption grammar: unknown verb {lemma!r}")
            s3, ing = _VERBS[lemma]
            word = {"s3": s3, "ing": ing, "base": lemma}[form]
            entry = ("VERB", lemma)
        else:
            word = item
            if word not in LEXICON:
                raise KeyError(
                    f"caption grammar: word {word!r} is not in the lexicon (template {template!r})"
                )
            entry = LEXICON[word]
        pos, lemma = entry
        if tag is not None:
            pos = tag
        words.append(word)
        out_word = lemma if pos in ("NOUN", "VERB") and word != "left" else word
        tokens.append(f"{out_word.lower()}/{pos}")
    return " ".join(words), tuple(tokens)


# ------------------------------------------------------------------------------------------------
# Phrase tables
# ------------------------------------------------------------------------------------------------

_SUBJECTS = (("a person", "his"), ("a person", "their"), ("a man", "his"), ("someone", "his"),
             ("the person", "his"), ("a woman", "her"), ("the man", "his"), ("a figure", "his"),
             ("a human", "their"), ("someone", "their"))  # fmt: skip
_SPEED = {
    "slow": ("slowly", "slowly", "at a slow pace", "very slowly", "gently"),
    "fast": ("quickly", "fast", "quickly", "at a fast|ADJ pace", "rapidly", "briskly"),
    "normal": ("at a normal pace", "steadily", "at a moderate pace"),
}
_COUNT = {1: ("once",), 2: ("twice", "two times"), 3: ("three times",), 4: ("four times", "several times",
                                                                             "multiple times", "repeatedly")}  # fmt: skip
_NUM = {1: "one", 2: "two", 3: "three", 4: "four"}
_SIDE_ADJ = {"left": "left|ADJ", "right": "right|ADJ"}


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


class _Clause:
    """Builds one verb phrase for one action, recording what it states."""

    def __init__(
        self, act: ActionSpec, index: int, rng: np.random.Generator, poss: str, keep: dict[str, bool]
    ):
        self.act, self.i, self.rng, self.poss, self.keep = act, index, rng, poss, keep
        self.stated: set[str] = {f"{index}.family"}

    def say(self, attr: str) -> bool:
        """Whether this clause states ``attr`` (and record it)."""
        if attr in self.act.meaningful() and self.keep.get(attr, True):
            self.stated.add(f"{self.i}.{attr}")
            return True
        return False

    def pick(self, options) -> str:
        return _pick(self.rng, options)

    def limb_np(self, part: str) -> str:
        """'his left hand' / 'the right arm' / 'both hands'."""
        limb = self.act.limb
        parts = {"arm": ("hand", "arm"), "leg": ("leg", "foot")}[part]
        if limb == "both":
            plural = {"hand": "hands", "arm": "arms", "leg": "legs", "foot": "feet"}
            return f"both {plural[self.pick(parts)]}"
        det = self.pick((self.poss, self.poss, "the"))
        return f"{det} {_SIDE_ADJ[limb]} {self.pick(parts)}"

    def speed_adv(self) -> str:
        return self.pick(_SPEED[self.act.speed]) if self.say("speed") else ""

    def count_adv(self) -> str:
        return self.pick(_COUNT[self.act.repetitions]) if self.say("repetitions") else ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _loco(c: _Clause) -> str:
    act = c.act
    d = act.direction
    run = act.family == "run"
    verbs = ["V:run"] if run else ["V:walk", "V:walk", "V:move"]
    if run and act.speed == "slow" and c.say("speed"):
        verb, speed = "V:jog", ""
    elif run and act.speed == "fast" and c.rng.random() < 0.3 and c.say("speed"):
        verb, speed = "V:sprint", ""
    elif not run and act.speed == "slow" and c.rng.random() < 0.25 and c.say("speed"):
        verb, speed = "V:stroll", ""
    else:
        verb, speed = c.pick(verbs), c.speed_adv()
    if not c.say("direction"):
        # A bare "moves" says nothing; without a direction the verb must name the gait.
        return _join(verb.replace("V:move", "V:walk"), speed)
    side = {"left": "left", "right": "right", "turn_left": "left", "turn_right": "right", "circle_left": "left",
            "circle_right": "right"}.get(d, "")  # fmt: skip
    if d == "forward":
        dirp = c.pick(("forward", "forward", "straight ahead", "ahead", "straight forward", "forwards",
                       "in a straight line"))  # fmt: skip
        return c.pick((_join(verb, dirp, speed), _join(verb, speed, dirp)))
    if d == "backward":
        dirp = c.pick(("backward", "backwards", "backward", "backwards"))
        return c.pick((_join(verb, dirp, speed), _join(verb, speed, dirp)))
    if d in ("left", "right"):
        return c.pick((
            _join(verb, f"to the {side}|NOUN", speed),
            _join(verb, speed, f"to {c.poss} {side}|NOUN"),
            _join("V:turn", f"{side}|ADV", "and", verb.replace("V:", "V:"), speed),
        ))  # fmt: skip
    if d in ("turn_left", "turn_right"):
        return c.pick((
            _join(verb, "forward", speed, "and then", "V:turn", f"{side}|ADV"),
            _join(verb, speed, "and", "V:turn", f"to the {side}|NOUN"),
            _join(verb, "forward and", "V:turn", f"{side}|ADV", speed),
            _join(verb, speed, "and then", "V:turn", f"{side}|ADV"),
        ))  # fmt: skip
    rot = "counterclockwise" if side == "left" else "clockwise"
    return c.pick((
        _join(verb, "in a circle", speed),
        _join(verb, speed, "in a", rot, "circle|NOUN"),
        _join(verb, rot, "in a circle", speed),
        _join(verb, "around in a circle to the", f"{side}|NOUN", speed),
        _join(verb, "in a circle", speed),
    ))  # fmt: skip


def _jump(c: _Clause) -> str:
    act = c.act
    amp = ""
    if c.say("amplitude"):
        amp = {"low": c.pick(("a little", "lightly", "slightly")), "high": c.pick(("high", "very high")),
               "normal": ""}[act.amplitude]  # fmt: skip
    count = c.count_adv()
    dirp = ""
    if c.say("direction"):
        dirp = {"up": c.pick(("up", "up and down", "in place", "on the spot", "up")),
                "forward": c.pick(("forward", "forwards", "ahead")),
                "backward": c.pick(("backward", "backwards", "back")),
                "left": c.pick(("to the left|NOUN", "sideways to the left|NOUN")),
                "right": c.pick(("to the right|NOUN", "sideways to the right|NOUN"))}[act.direction]  # fmt: skip
    if act.repetitions > 1 and count and c.rng.random() < 0.3:
        n = _NUM[act.repetitions]
        size = {"low": "small", "high": "big", "normal": ""}[act.amplitude] if amp else ""
        return _join("V:do", n, size, "jumps|NOUN", dirp)
    return c.pick((_join("V:jump", dirp, amp, count), _join("V:jump", amp, dirp, count)))


def _hop(c: _Clause) -> str:
    act = c.act
    limb = ""
    if c.say("limb"):
        limb = c.pick((f"on {c.poss} {_SIDE_ADJ[act.limb]} {c.pick(('leg', 'foot'))}",
                       f"on the {_SIDE_ADJ[act.limb]} {c.pick(('leg', 'foot'))}"))  # fmt: skip
    elif c.rng.random() < 0.5:
        limb = "on one foot"
    dirp = ""
    if c.say("direction"):
        dirp = (
            c.pick(("forward", "ahead"))
            if act.direction == "forward"
            else c.pick(("in place", "on the spot", ""))
        )
    count = c.count_adv()
    return c.pick((_join("V:hop", dirp, limb, count), _join("V:hop", limb, dirp, count)))


def _wave(c: _Clause) -> str:
    act = c.act
    limb = c.limb_np("arm") if c.say("limb") else ""
    amp = ""
    if c.say("amplitude"):
        amp = {"high": c.pick((f"above {c.poss} head", f"high above {c.poss} head", "overhead")),
               "low": c.pick(("at shoulder height", "low")), "normal": ""}[act.amplitude]  # fmt: skip
    speed, count = c.speed_adv(), c.count_adv()
    core = (
        c.pick((_join("V:wave", limb), _join("V:wave with", limb), _join("V:wave", limb)))
        if limb
        else "V:wave"
    )
    return c.pick((_join(core, amp, speed, count), _join(speed, core, amp, count)))


def _kick(c: _Clause) -> str:
    act = c.act
    limb = c.limb_np("leg") if c.say("limb") else ""
    amp = ""
    if c.say("amplitude"):
        amp = {"high": c.pick(("high", "very high")), "low": "low",
               "normal": ""}[act.amplitude]  # fmt: skip
    count, speed = c.count_adv(), c.speed_adv()
    forms = [_join("V:kick", amp, "with", limb, count, speed) if limb else _join("V:kick", amp, count, speed),
             _join("V:kick", "forward", "with" if limb else "", limb, amp, count)]  # fmt: skip
    if limb and act.limb:
        forms.append(_join("V:kick", limb, "forward", amp, count))
    if amp and act.repetitions == 1 and count:
        size = {"high": "high|ADJ", "low": "low|ADJ", "normal": ""}[act.amplitude]
        forms.append(_join("V:do a", size, "kick|NOUN", "with" if limb else "", limb))
    return c.pick(forms)


def _squat(c: _Clause) -> str:
    act = c.act
    amp = ""
    if c.say("amplitude"):
        amp = {"high": c.pick(("deeply", "all the way down")), "low": c.pick(("slightly", "a little")),
               "normal": ""}[act.amplitude]  # fmt: skip
    count, speed = c.count_adv(), c.speed_adv()
    forms = [_join("V:squat down", amp, count, speed), _join(speed, "V:squat", amp, count),
             _join("V:crouch down", amp, count, speed)]  # fmt: skip
    if count and act.repetitions > 1:
        size = {"high": "deep", "low": "shallow", "normal": ""}[act.amplitude] if amp else ""
        forms.append(_join("V:do", _NUM[act.repetitions], size, "squats|NOUN", speed))
    if act.repetitions == 1:
        forms.append(_join("V:squat down", amp, speed, "and", "V:stand up again"))
    return c.pick(forms)


def _turn(c: _Clause) -> str:
    act = c.act
    side = act.direction
    dirp = (
        c.pick((f"to the {side}|NOUN", f"{side}|ADV", f"to {c.poss} {side}|NOUN"))
        if c.say("direction")
        else ""
    )
    speed = c.speed_adv()
    if not c.say("amplitude"):
        return _join("V:turn", dirp, speed)
    if act.amplitude == "low":
        return c.pick((_join("V:turn", dirp, speed), _join("V:turn ninety degrees", dirp, speed),
                       _join("V:make a quarter turn", dirp, speed)))  # fmt: skip
    if act.amplitude == "normal":
        return c.pick((_join("V:turn around", dirp, speed), _join(speed, "V:turn around", dirp),
                       _join("V:turn", "back" if not dirp else "around", dirp, speed)))  # fmt: skip
    return c.pick((_join("V:spin around", dirp, speed), _join("V:turn all the way around", dirp, speed),
                   _join("V:make a full turn", dirp, speed), _join("V:spin in a full circle", dirp, speed)))  # fmt: skip


def _sit(c: _Clause) -> str:
    speed = c.speed_adv()
    return c.pick((_join("V:sit down", speed), _join(speed, "V:sit down"), _join("V:sit down on a chair", speed),
                   _join("V:take a seat", speed), _join("V:sit down", speed)))  # fmt: skip


def _stand(c: _Clause) -> str:
    speed = c.speed_adv()
    return c.pick((_join("V:stand up", speed), _join(speed, "V:stand up"),
                   _join("V:get up from a chair", speed), _join("V:stand up from a seated position", speed),
                   _join("V:rise from the chair", speed)))  # fmt: skip


def _raise(c: _Clause) -> str:
    act = c.act
    if c.say("limb"):
        limb = c.limb_np("arm")
    else:
        limb = f"{c.poss} arms" if act.limb == "both" else c.pick(("an arm", "one arm"))
    dirp = ""
    if c.say("direction"):
        dirp = {"up": c.pick(("up", f"above {c.poss} head", "overhead", "up high")),
                "forward": c.pick(("forward", "in front of the body", "straight forward")),
                "sideways": c.pick(("out to the side", "sideways", "to the side"))}[act.direction]  # fmt: skip
    speed, count = c.speed_adv(), c.count_adv()
    verb = c.pick(("V:raise", "V:lift", "V:raise"))
    forms = [_join(verb, limb, dirp, count, speed), _join(speed, verb, limb, dirp, count)]
    if act.limb == "both" and act.direction == "sideways" and {f"{c.i}.limb", f"{c.i}.direction"} <= c.stated:
        forms.append(_join("V:spread", f"{c.poss} arms out", count, speed))
    return c.pick(forms)


def _punch(c: _Clause) -> str:
    act = c.act
    limb = ""
    if c.say("limb"):
        limb = {"both": c.pick(("both hands", "both fists")),
                "left": f"{c.pick((c.poss, 'the'))} left|ADJ {c.pick(('hand', 'fist', 'arm'))}",
                "right": f"{c.pick((c.poss, 'the'))} right|ADJ {c.pick(('hand', 'fist', 'arm'))}"}[act.limb]  # fmt: skip
    count, speed = c.count_adv(), c.speed_adv()
    forms = [_join("V:punch", "forward", "with" if limb else "", limb, count, speed),
             _join("V:punch", "with" if limb else "", limb, count, speed),
             _join(speed, "V:punch the air", "with" if limb else "", limb, count)]  # fmt: skip
    if count and act.repetitions > 1:
        forms.append(
            _join("V:throw", _NUM[act.repetitions], "punches|NOUN", "with" if limb else "", limb, speed)
        )
    return c.pick(forms)


def _side_step(c: _Clause) -> str:
    act = c.act
    dirp = f"to the {act.direction}|NOUN" if c.say("direction") else c.pick(("sideways", "to the side"))
    speed, count = c.speed_adv(), c.count_adv()
    if count and c.rng.random() < 0.5:
        n = _NUM[act.repetitions]
        noun = "step|NOUN" if act.repetitions == 1 else "steps|NOUN"
        return _join("V:take", n, noun, dirp if "to" in dirp else "sideways", speed)
    return c.pick((_join("V:step", dirp, count, speed), _join("V:shuffle sideways" if "to the" in dirp else "V:shuffle",
                   dirp if "to the" in dirp else "", count, speed), _join(speed, "V:step", dirp, count),
                   _join("V:move sideways", dirp if "to the" in dirp else "", count, speed)))  # fmt: skip


def _jacks(c: _Clause) -> str:
    count, speed = c.count_adv(), c.speed_adv()
    n = c.act.repetitions
    if count and c.rng.random() < 0.6:
        return _join(
            c.pick(("V:do", "V:perform")),
            _NUM[n],
            "jumping|VERB",
            "jack|NOUN" if n == 1 else "jacks|NOUN",
            speed,
        )
    return _join(c.pick(("V:do", "V:perform", "V:do")), "jumping|VERB jacks|NOUN", count, speed)


def _clap(c: _Clause) -> str:
    count, speed = c.count_adv(), c.speed_adv()
    return c.pick((_join("V:clap", count, speed), _join("V:clap", f"{c.poss} hands", count, speed),
                   _join(speed, "V:clap", f"{c.poss} hands together", count)))  # fmt: skip


def _bend(c: _Clause) -> str:
    act = c.act
    count, speed = c.count_adv(), c.speed_adv()
    if not c.say("amplitude"):
        return c.pick((_join("V:bend forward", count, speed), _join("V:bend over", count, speed)))
    if act.amplitude == "low":
        return c.pick((_join("V:bow", count, speed), _join("V:bend forward slightly", count, speed),
                       _join("V:lean forward a little", count, speed)))  # fmt: skip
    if act.amplitude == "high":
        return c.pick((_join("V:bend down to touch", f"{c.poss} toes", count, speed),
                       _join("V:bend all the way down", count, speed), _join("V:bend over deeply", count, speed)))  # fmt: skip
    return c.pick((_join("V:bend forward", count, speed), _join("V:bend down", count, speed),
                   _join("V:bend over", count, speed)))  # fmt: skip


def _throw(c: _Clause) -> str:
    limb = c.limb_np("arm") if c.say("limb") else ""
    count, speed = c.count_adv(), c.speed_adv()
    obj = c.pick(("a ball", "something", "an object", "a ball"))
    return c.pick((_join("V:throw", obj, "with" if limb else "", limb, count, speed),
                   _join(speed, "V:throw", obj, count, "with" if limb else "", limb),
                   _join("V:throw", obj, "forward", "with" if limb else "", limb, count)))  # fmt: skip


_CLAUSES = {
    "walk": _loco, "run": _loco, "jump": _jump, "hop": _hop, "wave": _wave, "kick": _kick, "squat": _squat,
    "turn": _turn, "sit_down": _sit, "stand_up": _stand, "raise_arms": _raise, "punch": _punch,
    "side_step": _side_step, "jumping_jacks": _jacks, "clap": _clap, "bend": _bend, "throw": _throw,
}  # fmt: skip

# Probability that a caption leaves an attribute out (per attribute; "normal" values are rarely said).
_DROP = {"speed": 0.45, "repetitions": 0.35, "amplitude": 0.4, "limb": 0.12, "direction": 0.08}
_DROP_NORMAL = {"speed": 0.92, "amplitude": 0.9}


def _keep_flags(
    act: ActionSpec, rng: np.random.Generator, specific: bool, state_all: bool = False
) -> dict[str, bool]:
    keep = {}
    for attr, p in _DROP.items():
        value = getattr(act, attr)
        if state_all:
            p = 0.0
        elif value == "normal":
            p = _DROP_NORMAL.get(attr, p)
        elif attr == "direction" and value in ("forward", "up"):
            p = 0.35
        elif specific:
            p = 0.0
        keep[attr] = bool(rng.random() >= p)
    return keep


def _clause(
    act: ActionSpec, index: int, rng: np.random.Generator, poss: str, specific: bool, state_all: bool = False
) -> _Clause:
    c = _Clause(act, index, rng, poss, _keep_flags(act, rng, specific, state_all))
    template = _CLAUSES[act.family](c)
    # "at a slow pace" reads badly before the verb; move such phrases to the end of the clause.
    words = template.split()
    if words[:2] == ["at", "a"] and len(words) > 4:
        template = " ".join(words[4:] + words[:4])
    c.template = template  # type: ignore[attr-defined]
    return c


def _sentence(
    subject: str, poss: str, rng: np.random.Generator, clauses: list[_Clause], relation: str
) -> str:
    """Combine clause templates (with V: verbs) into one sentence template with its verb forms."""
    a = clauses[0].template  # type: ignore[attr-defined]
    if relation == "single":
        return _pick(rng, (f"{subject} {a}", f"{subject} {a}", f"{subject} is {_ing(a)}"))
    b = clauses[1].template  # type: ignore[attr-defined]
    pron = {"his": "he", "her": "she"}.get(poss)
    if relation == "sequence":
        return _pick(rng, (
            f"{subject} {a} and then {b}", f"{subject} {a} , then {b}", f"{subject} {a} and {b}",
            f"{subject} first {a} , then {b}", f"{subject} {a} before {_ing(b)}",
            f"after {_ing(a)} , {subject} {b}", f"{subject} {a} , and then {b}",
        ))  # fmt: skip
    return _pick(rng, (
        f"{subject} {a} while {_ing(b)}", f"{subject} {b} while {_ing(a)}", f"while {_ing(a)} , {subject} {b}",
        f"{subject} {a} and {b} at the same time", f"{subject} is {_ing(a)} and {_ing(b)}",
        f"{subject} {b} as {pron} {a}" if pron else f"{subject} {a} while {_ing(b)}",
    ))  # fmt: skip


def _ing(template: str) -> str:
    """Mark every verb of a clause as -ing (``V:walk`` -> ``G:walk``)."""
    return template.replace("V:", "G:")


def _finalize(template: str) -> tuple[str, tuple[str, ...]]:
    """Realise a sentence template mixing finite (V:) and -ing (G:) verbs."""
    words, tokens = [], []
    for item in template.split():
        if item.startswith("G:"):
            w, t = realize("V:" + item[2:], "ing")
        elif item.startswith("V:") or item == ",":
            if item == ",":
                if words:
                    words[-1] += ","
                continue
            w, t = realize(item, "s3")
        else:
            w, t = realize(item)
        words.append(w)
        tokens.extend(t)
    return " ".join(words), tuple(tokens)


def caption_action(
    program: MotionProgram,
    index: int,
    rng: np.random.Generator,
    specific: bool = False,
    state_all: bool = False,
) -> Caption:
    """A caption for one action of the program alone (used for sub-clip caption lines).

    ``state_all``: state every meaningful attribute, "normal" values too (see ``caption_program``).
    """
    subject, poss = _pick(rng, _SUBJECTS)
    c = _clause(program.actions[index], index, rng, poss, specific, state_all)
    template = _sentence(subject, poss, rng, [c], "single")
    return _make_caption(template, tuple(sorted(c.stated)), rng)


def _make_caption(template: str, stated: tuple[str, ...], rng: np.random.Generator) -> Caption:
    text, tokens = _finalize(template)
    text = text.replace(" ,", ",")
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.8:
        text += "."
    return Caption(text=text, tokens=tokens, stated=stated)


def caption_program(
    program: MotionProgram, rng: np.random.Generator, n: int = 3, state_all: bool = False
) -> list[Caption]:
    """``n`` whole-clip paraphrases of ``program`` (distinct texts where the grammar allows).

    The first caption states every non-default attribute about half the time; the rest drop
    attributes at random (``_DROP``), as real captions often omit speed or count. ``state_all``
    states every meaningful attribute in every caption, "normal" speed and amplitude included
    (the builder uses it for held-out captions that must differ from every training caption).
    """
    out: list[Caption] = []
    seen: set[str] = set()
    for attempt in range(n * 6):
        if len(out) >= n:
            break
        specific = len(out) == 0 and rng.random() < 0.5
        subject, poss = _pick(rng, _SUBJECTS)
        clauses = [_clause(a, i, rng, poss, specific, state_all) for i, a in enumerate(program.actions)]
        template = _sentence(subject, poss, rng, clauses, program.relation)
        stated = set().union(*(c.stated for c in clauses))
        if program.relation != "single":
            stated.add("relation")
        cap = _make_caption(template, tuple(sorted(stated)), rng)
        key = " ".join(cap.tokens)
        if key in seen and attempt < n * 5:
            continue
        seen.add(key)
        out.append(cap)
    return out


# ------------------------------------------------------------------------------------------------
# Attribute phrases (for assessment / refinement texts built on top of SynthML)
# ------------------------------------------------------------------------------------------------

_LOCO_DIR_PHRASE = {
    "forward": "forward", "backward": "backward", "left": "to the left|NOUN", "right": "to the right|NOUN",
    "turn_left": "forward and then V:turn left|ADV", "turn_right": "forward and then V:turn right|ADV",
    "circle_left": "in a counterclockwise circle|NOUN", "circle_right": "in a clockwise circle|NOUN",
    "up": "in place", "sideways": "out to the side",
}  # fmt: skip
_AMPLITUDE_PHRASE = {
    "jump": {"low": "a little", "normal": "at a normal height", "high": "high"},
    "wave": {"low": "at shoulder height", "normal": "beside the head", "high": "above the head"},
    "kick": {"low": "low", "normal": "at a normal height", "high": "high"},
    "squat": {"low": "slightly", "normal": "down", "high": "deeply"},
    "turn": {"low": "a quarter turn|NOUN", "normal": "around", "high": "all the way around"},
    "bend": {"low": "slightly", "normal": "forward", "high": "all the way down"},
}
_SPEED_PHRASE = {"slow": "slowly", "normal": "at a normal pace", "fast": "quickly"}
_COUNT_PHRASE = {1: "once", 2: "twice", 3: "three times", 4: "four times"}


def attribute_phrase(family: str, attribute: str, value) -> tuple[str, tuple[str, ...]]:
    """A short phrase for one attribute value, e.g. ("kick", "limb", "left") -> "with the left leg".

    Returns ``(text, tokens)`` with ``word/POS`` tokens (verbs in -s form, as in "then turns left").
    ``duration`` gives "for about N seconds" (N in digits, so its tokens are left empty).
    Raises ``KeyError`` for an attribute that has no phrase for the family.
    """
    spec = FAMILIES[family]
    if attribute == "duration":
        return f"for about {round(float(value))} seconds", ()
    if attribute == "direction":
        template = _LOCO_DIR_PHRASE[value]
        if family == "raise_arms" and value == "up":
            template = "up above the head"
    elif attribute == "speed":
        template = _SPEED_PHRASE[value]
    elif attribute == "repetitions":
        template = _COUNT_PHRASE[int(value)]
    elif attribute == "limb":
        part = {"arm": ("arm", "arms"), "leg": ("leg", "legs")}[spec.limb_part or "arm"]
        prep = "on" if family == "hop" else "with"
        template = f"{prep} both {part[1]}" if value == "both" else f"{prep} the {value}|ADJ {part[0]}"
    elif attribute == "amplitude":
        template = _AMPLITUDE_PHRASE[family][value]
    else:
        raise KeyError(f"no phrase for attribute {attribute!r}")
    words, tokens = [], []
    for part in template.split():
        w, t = realize(part, "s3")
        words.append(w)
        tokens.extend(t)
    return " ".join(words), tuple(tokens)


def caption_vocabulary() -> list[str]:
    """Every token word the grammar can emit (lemmas for nouns and verbs, plus ``left``), sorted.

    Useful to check a word-vector file covers SynthML captions or to build a small one.
    """
    words = set()
    for word, (pos, lemma) in LEXICON.items():
        words.add(lemma if pos in ("NOUN", "VERB") and word != "left" else word)
    return sorted(words)
