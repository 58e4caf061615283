from django.apps import AppConfig


class TrackersConfig(AppConfig):
    name = "trackers"
    verbose_name = "Workspaces and corpus"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        from trackers import backup, embedding, generation, imports
        from trackers.models import Dataset, EmbedPart, Job, Membership, Tracker, Workspace
        from trackers.work import work_finished

        generation.watch(
            get_user_model(), Workspace, Membership, Dataset, Tracker, m2m=(Tracker.datasets.through,)
        )

        work_finished.connect(imports.discard_upload, sender=Job, dispatch_uid="trackers-discard-upload")
        work_finished.connect(embedding.part_ended, sender=EmbedPart, dispatch_uid="trackers-part-ended")
        backup.relocated.connect(backup.relocate_corpus, dispatch_uid="trackers-relocate-corpus")
