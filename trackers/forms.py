from __future__ import annotations

from django import forms

from trackers.importing import FORMATS


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


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
    q = forms.CharField(max_length=2000, label="Sentence")
    k = forms.IntegerField(min_value=1, max_value=200, initial=20, required=False)
