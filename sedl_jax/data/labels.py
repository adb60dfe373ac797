"""Emotion class names: synonyms folded into one canonical set.

Datasets spell the same emotion differently (CK+ `anger`, `happiness`,
`sadness`; FER folders `angry`, `happy`, `sad`; `normal` for neutral). Raw
names are lower-cased and mapped through `SYNONYMS`, then through the user's
overrides (`config.data.label_map="raw=canonical,..."`). The classes present
after mapping decide the head size, in `CANONICAL` order, with the user's
`config.data.extra_classes` after them.
"""

from __future__ import annotations

import dataclasses

# FER2013's seven in its own index order, then CK+'s contempt as its own class.
FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CANONICAL = FER2013 + ("contempt",)

SYNONYMS = {
    "anger": "angry", "angry": "angry", "mad": "angry", "annoyed": "angry",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "joyful": "happy",
    "smile": "happy", "smiling": "happy",
    "sad": "sad", "sadness": "sad", "unhappy": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "normal": "neutral", "calm": "neutral",
    "contempt": "contempt", "contemptuous": "contempt",
}


def parse_pairs(text: str, field: str) -> dict[str, str]:
  """`"a=b, c=d"` -> {"a": "b", "c": "d"} (lower-cased); errors name the config field."""
  out = {}
  for part in (text or "").split(","):
    part = part.strip()
    if not part:
      continue
    if part.count("=") != 1:
      raise ValueError(f"config.{field}: {part!r} is not of the form raw=canonical")
    raw, canon = (p.strip().lower() for p in part.split("="))
    if not raw or not canon:
      raise ValueError(f"config.{field}: {part!r} has an empty side")
    out[raw] = canon
  return out


def parse_list(text: str) -> tuple[str, ...]:
  return tuple(p.strip().lower() for p in (text or "").split(",") if p.strip())


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """Raw label name -> canonical class name, or None for an unknown label."""

  overrides: dict
  extra: tuple[str, ...] = ()

  @classmethod
  def from_config(cls, data_cfg) -> "LabelMap":
    overrides = parse_pairs(data_cfg.get("label_map", ""), "data.label_map")
    extra = parse_list(data_cfg.get("extra_classes", ""))
    known = set(CANONICAL) | set(extra)
    for raw, canon in overrides.items():
      if canon not in known:
        raise ValueError(f"config.data.label_map: {raw}={canon}: {canon!r} is not a class "
                         f"(classes: {', '.join(CANONICAL)}; add new ones to data.extra_classes)")
    return cls(overrides, extra)

  def canonical(self, raw: str) -> str | None:
    name = str(raw).strip().lower()
    if name in self.overrides:
      return self.overrides[name]
    if name in self.extra:
      return name
    return SYNONYMS.get(name)

  def order(self, present) -> tuple[str, ...]:
    """The classes to train on: those present, canonical first, extras after."""
    present = set(present)
    return tuple(c for c in CANONICAL + self.extra if c in present)

  def to_dict(self) -> dict:
    return {"synonyms": SYNONYMS, "overrides": self.overrides, "extra_classes": list(self.extra)}
