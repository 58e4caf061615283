from __future__ import annotations

from django import forms

from trackers.forms import text_field
from trackers.models import Dataset, Granularity, TrackerKind
from trackers.services import DESCRIPTION_MAX_CHARS, NAME_MAX_CHARS


class TrackerForm(forms.Form):
    name = text_field(NAME_MAX_CHARS)
    description = text_field(
        DESCRIPTION_MAX_CHARS,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What counts as a match, in a sentence or two.",
    )
    kind = forms.ChoiceField(
        choices=TrackerKind.choices, initial=TrackerKind.CONCEPT, widget=forms.RadioSelect, required=False
    )
    labels = text_field(
        1_200,
        required=False,
        label="Topic labels",
        help_text="Topic trackers only: 2 to 9 names, comma-separated (e.g. billing, cancellation, technical).",
    )
    granularity = forms.ChoiceField(
        choices=Granularity.choices,
        initial=Granularity.SEGMENT,
        widget=forms.RadioSelect,
        label="What to classify",
        required=False,
    )
    datasets = forms.ModelMultipleChoiceField(
        queryset=Dataset.objects.none(), widget=forms.CheckboxSelectMultiple
    )
    seeds = text_field(
        200_000,
        widget=forms.Textarea(attrs={"rows": 6}),
        label="Example sentences",
        help_text=(
            "At least 3 sentences that are matches, one per line. "
            "Topic trackers: write each as 'label: sentence', at least one per label."
        ),
    )
    keywords = text_field(5_000, required=False, help_text="Optional, comma-separated.")
    speaker_filter = text_field(
        NAME_MAX_CHARS,
        required=False,
        label="Only this speaker",
        help_text="e.g. customer; leave empty for everyone.",
    )
    target_precision = forms.FloatField(
        initial=0.8,
        min_value=0.05,
        max_value=0.999,
        help_text="Of the texts it matches, the share that should truly match (0.8: 8 in 10). Training "
        "picks the threshold that finds the most matches at this precision; you can move it later.",
    )
    round_size = forms.IntegerField(
        initial=25,
        min_value=5,
        max_value=200,
        help_text="Cards per round of the game; each round ends with training and a new version.",
    )

    def __init__(self, *args, workspace=None, **kwargs):
        super().__init__(*args, **kwargs)
        datasets = self.fields["datasets"]
        assert isinstance(datasets, forms.ModelMultipleChoiceField)
        datasets.queryset = Dataset.objects.filter(workspace=workspace, vector_count__gt=0)

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or TrackerKind.CONCEPT

    def clean_granularity(self) -> str:
        return self.cleaned_data.get("granularity") or Granularity.SEGMENT

    def label_list(self) -> list[str]:
        return [n.strip() for n in self.cleaned_data.get("labels", "").split(",") if n.strip()]

    def seed_list(self) -> list:
        """Sentences; for topic trackers (label, sentence) pairs."""
        lines = [line.strip() for line in self.cleaned_data["seeds"].splitlines()]
        if self.cleaned_data.get("kind") != TrackerKind.TOPIC:
            return [line for line in lines if line]
        pairs = []
        for n, line in enumerate(lines, 1):
            if not line:
                continue
            label, sep, text = line.partition(":")
            if not sep or not text.strip():
                raise forms.ValidationError(
                    f"example line {n}: write it as 'label: sentence' (got '{line[:60]}')"
                )
            pairs.append((label.strip(), text.strip()))
        return pairs

    def keyword_list(self) -> list[str]:
        return [k.strip() for k in self.cleaned_data["keywords"].split(",") if k.strip()]


class TrackerSettingsForm(forms.Form):
    """What can change once a tracker exists: its name and description, and how it trains."""

    name = text_field(NAME_MAX_CHARS)
    description = text_field(DESCRIPTION_MAX_CHARS, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    target_precision = forms.FloatField(
        min_value=0.05,
        max_value=0.999,
        help_text="The precision training picks the threshold for, from the next version on (the live one keeps its own).",
    )
    round_size = forms.IntegerField(min_value=5, max_value=200, help_text="Cards per round of the game.")
