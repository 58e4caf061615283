from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from trackers.importing import FORMATS
from trackers.services import DESCRIPTION_MAX_CHARS, NAME_MAX_CHARS
from trackers.text import problem


def storable_text(value: str) -> None:
    """Form validator: no lone surrogates (Django's CharField already refuses NUL characters)."""
    why = problem(value)
    if why:
        raise ValidationError(why)


def text_field(max_length: int, **kwargs) -> forms.CharField:
    """A bounded CharField of storable text."""
    return forms.CharField(max_length=max_length, validators=[storable_text], **kwargs)


class DatasetForm(forms.Form):
    name = text_field(NAME_MAX_CHARS)
    description = text_field(DESCRIPTION_MAX_CHARS, required=False, widget=forms.Textarea(attrs={"rows": 2}))


class UploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV with a 'text' column, JSONL of messages or calls, a .txt transcript, or a zip of transcripts"
    )
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="auto")
    on_error = forms.ChoiceField(
        choices=[
            ("reject", "Import nothing if any row is bad"),
            ("skip", "Import the good rows, list the bad ones"),
        ],
        initial="reject",
        widget=forms.RadioSelect,
        label="If some rows are bad",
    )


class SearchForm(forms.Form):
    q = text_field(2000, label="Sentence")
    k = forms.IntegerField(min_value=1, max_value=200, initial=20, required=False)
