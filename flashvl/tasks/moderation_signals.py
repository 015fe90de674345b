"""Moderation signals: what the offline stage's measurements and rules over OCR text raise, each with
its source and evidence (identifiers masked). ``flashvl/tasks/moderate.py`` combines them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

CATEGORIES = ("adult", "violence", "weapons", "drugs", "hate", "privacy", "contact_ads", "other")
Category = Literal["adult", "violence", "weapons", "drugs", "hate", "privacy", "contact_ads", "other"]
Source = Literal["safety_model", "imagenet", "coco", "ocr_rules", "language"]

# ImageNet-1k index -> (category, weight). Weight scales the classifier's probability.
IMAGENET_SIGNALS: dict[int, tuple[Category, float]] = {
    413: ("weapons", 1.0),  # assault rifle
    763: ("weapons", 1.0),  # revolver
    764: ("weapons", 1.0),  # rifle
    657: ("weapons", 0.8),  # missile
    744: ("weapons", 0.8),  # projectile
    471: ("weapons", 0.6),  # cannon
    597: ("weapons", 0.6),  # holster
    583: ("violence", 0.7),  # guillotine
    845: ("drugs", 0.6),  # syringe: medical far more often than not
}
COCO_SIGNALS: dict[str, tuple[Category, float]] = {"knife": ("weapons", 0.6)}
MIN_LABEL_SCORE = 0.2  # classifier/detector probabilities below this are not evidence

KEYWORDS: dict[Category, tuple[str, ...]] = {
    "adult": ("porn", "xxx", "nude", "escort", "色情", "裸聊", "约炮", "成人视频"),
    "violence": ("kill you", "massacre", "behead", "砍死", "杀了你", "血腥", "爆炸袭击"),
    "weapons": ("gun for sale", "buy guns", "ammunition", "枪支", "手枪", "子弹", "弹药", "仿真枪"),
    "drugs": (
        "cocaine",
        "heroin",
        "methamphetamine",
        "meth for sale",
        "marijuana",
        "cannabis",
        "大麻",
        "冰毒",
        "海洛因",
        "可卡因",
        "摇头丸",
        "k粉",
    ),
    "hate": ("heil hitler", "white power", "sieg heil", "gas the", "种族清洗"),
    "contact_ads": (
        "加微信",
        "加v",
        "微信号",
        "扫码",
        "代购",
        "刷单",
        "兼职日结",
        "免费领取",
        "call now",
        "whatsapp",
        "telegram",
        "promo code",
        "discount code",
        "click here",
    ),
}
KEYWORD_SCORE: dict[Category, float] = {
    "adult": 0.7,
    "violence": 0.6,
    "weapons": 0.6,
    "drugs": 0.7,
    "hate": 0.8,
    "contact_ads": 0.6,
}

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
RESIDENT_ID = re.compile(
    r"(?<![0-9A-Za-z])([1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx])(?![0-9A-Za-z])"
)
PASSPORT = re.compile(r"(?<![0-9A-Za-z])([EGDSPKH][A-Z]?\d{7,8})(?![0-9A-Za-z])")
PASSPORT_CONTEXT = re.compile(r"passport|护照", re.IGNORECASE)
CN_MOBILE = re.compile(r"(?<!\d)(?:\+?86[- ]?)?(1[3-9]\d[- ]?\d{4}[- ]?\d{4})(?!\d)")
LANDLINE = re.compile(r"(?<!\d)(0\d{2,3}-\d{7,8})(?!\d)")
INTL_PHONE = re.compile(r"(?<![\w+])(\+\d{1,3}[ -]?\(?\d{1,4}\)?(?:[ -]?\d{2,4}){2,4})(?!\d)")
CARD = re.compile(r"(?<!\d)(\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}(?:[ -]?\d{1,3})?)(?!\d)")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"(?:https?://|www\.)[^\s]+|\b[\w-]+\.(?:com|cn|net|org|top|xyz)\b", re.IGNORECASE)
HANDLE = re.compile(r"(?:微信|wechat|vx|qq|QQ)[::\s]*([A-Za-z0-9_-]{5,20})", re.IGNORECASE)


@dataclass(frozen=True)
class Signal:
    category: Category
    source: Source
    score: float
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "score": round(self.score, 4), "evidence": self.evidence}


# ------------------------------------------------------------------ signals from the offline stage


def image_signals(observations: dict[str, Any]) -> list[Signal]:
    """Safety score, ImageNet labels and COCO detections that mean something for moderation."""
    signals: list[Signal] = []
    nsfw = (observations.get("safety") or {}).get("nsfw_score")
    if nsfw is not None:
        signals.append(Signal("adult", "safety_model", float(nsfw), f"Open-NSFW score {float(nsfw):.2f}"))
    for label in observations.get("labels") or []:
        hit = IMAGENET_SIGNALS.get(int(label["index"]))
        if hit and label["score"] >= MIN_LABEL_SCORE:
            signals.append(
                Signal(
                    hit[0],
                    "imagenet",
                    label["score"] * hit[1],
                    f"classifier: {label['name']} ({label['score']:.2f})",
                )
            )
    for obj in observations.get("objects") or []:
        hit = COCO_SIGNALS.get(obj["label"])
        if hit and obj["score"] >= MIN_LABEL_SCORE:
            signals.append(
                Signal(hit[0], "coco", obj["score"] * hit[1], f"detector: {obj['label']} ({obj['score']:.2f})")
            )
    return signals


# ------------------------------------------------------------------ rules over OCR text


def resident_id_valid(number: str) -> bool:
    """GB 11643-1999 checksum of an 18-character Chinese resident ID."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    numbers = [int(d) for d in digits if d.isdigit()]
    if not 13 <= len(numbers) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(numbers)):
        if index % 2:
            digit = digit * 2 - 9 if digit * 2 > 9 else digit * 2
        total += digit
    return total % 10 == 0


def _mask(value: str) -> str:
    """Evidence never repeats a full identifier: keep the first 3 and last 2 characters."""
    compact = re.sub(r"[\s-]", "", value)
    return compact[:3] + "*" * max(0, len(compact) - 5) + compact[-2:] if len(compact) > 6 else "***"


def text_signals(text: str) -> list[Signal]:
    """Patterns and keywords over OCR text; evidence masks the identifiers it found."""
    signals: list[Signal] = []
    ids = set()
    for match in RESIDENT_ID.finditer(text):
        number = match.group(1)
        ids.add(number)
        if resident_id_valid(number):
            signals.append(Signal("privacy", "ocr_rules", 0.95, f"resident ID number, checksum valid: {_mask(number)}"))
        else:
            signals.append(Signal("privacy", "ocr_rules", 0.6, f"ID-like 18-digit number: {_mask(number)}"))
    has_passport_word = bool(PASSPORT_CONTEXT.search(text))
    for match in PASSPORT.finditer(text):
        score = 0.9 if has_passport_word else 0.55
        signals.append(Signal("privacy", "ocr_rules", score, f"passport-like number: {_mask(match.group(1))}"))
    if has_passport_word and not PASSPORT.search(text) and re.search(r"\b[A-Z0-9]{8,9}\b", text):
        signals.append(Signal("privacy", "ocr_rules", 0.6, "passport label next to a document number"))
    phones = [m.group(1) for m in CN_MOBILE.finditer(text)] + [m.group(1) for m in LANDLINE.finditer(text)]
    phones += [
        m.group(1)
        for m in INTL_PHONE.finditer(text)
        if not any(m.group(1).replace(" ", "").endswith(p.replace(" ", "")[-8:]) for p in phones)
    ]
    phones = [p for p in phones if not any(p.replace(" ", "") in i for i in ids)]
    for phone in phones:
        signals.append(Signal("privacy", "ocr_rules", 0.75, f"phone number: {_mask(phone)}"))
    for match in CARD.finditer(text):
        if luhn_valid(match.group(1)) and re.sub(r"\D", "", match.group(1)) not in ids:
            signals.append(
                Signal("privacy", "ocr_rules", 0.85, f"bank card number (Luhn valid): {_mask(match.group(1))}")
            )
    for match in EMAIL.finditer(text):
        signals.append(Signal("contact_ads", "ocr_rules", 0.65, f"e-mail address: {_mask(match.group(0))}"))
    for match in URL.finditer(text):
        if not EMAIL.search(match.group(0)) and "@" not in text[max(0, match.start() - 1) : match.start()]:
            signals.append(Signal("contact_ads", "ocr_rules", 0.55, f"web address: {match.group(0)[:40]}"))
    for match in HANDLE.finditer(text):
        signals.append(Signal("contact_ads", "ocr_rules", 0.7, f"messenger handle: {_mask(match.group(1))}"))
    lowered = text.lower()
    for category, words in KEYWORDS.items():
        found = [w for w in words if w in lowered]
        if found:
            signals.append(Signal(category, "ocr_rules", KEYWORD_SCORE[category], f"keywords: {', '.join(found[:3])}"))
    return signals


def flagged_lines(observations: dict[str, Any]) -> list[dict[str, Any]]:
    """The OCR lines that raise a text rule on their own, with their boxes (for the web page to outline).
    Each names its categories and the rules' masked evidence, never the line's text (it may hold an ID).
    A match that spans two lines raises its category over the whole text but outlines no line."""
    out = []
    for line in (observations.get("text") or {}).get("lines") or []:
        raised = text_signals(str(line.get("text", "")))
        if raised and line.get("box"):
            out.append(
                {
                    "box": [round(float(v), 1) for v in line["box"]],
                    "categories": sorted({signal.category for signal in raised}),
                    "evidence": [signal.evidence for signal in raised],
                }
            )
    return out
