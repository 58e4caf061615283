from __future__ import annotations

from django import forms

from trackers.models import Dataset


class TrackerForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What counts as a match, in a sentence or two.",
    )
    datasets = forms.ModelMultipleChoiceField(
        queryset=Dataset.objects.none(), widget=forms.CheckboxSelectMultiple
    )
    seeds = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        label="Example sentences",
        help_text="At least 3 sentences that are matches, one per line.",
    )
    keywords = forms.CharField(required=False, help_text="Optional, comma-separated.")
    speaker_filter = forms.CharField(
        required=False,
        max_length=120,
        label="Only this speaker",
        help_text="e.g. customer; leave empty for everyone.",
    )
    target_precision = forms.FloatField(initial=0.8, min_value=0.05, max_value=0.999)
    round_size = forms.IntegerField(initial=25, min_value=5, max_value=200)

    def __init__(self, *args, workspace=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["datasets"].queryset = Dataset.objects.filter(workspace=workspace, vector_count__gt=0)

    def seed_list(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["seeds"].splitlines() if line.strip()]

    def keyword_list(self) -> list[str]:
        return [k.strip() for k in self.cleaned_data["keywords"].split(",") if k.strip()]
