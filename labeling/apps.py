from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling and training"

    def ready(self) -> None:
        from labeling.models import TrainingRun
        from labeling.services import (
            after_training_failed,
            describe_deletion,
            files_of_deleted,
            relocate_runs,
        )
        from trackers import backup, deletion
        from trackers.work import work_failed

        work_failed.connect(after_training_failed, sender=TrainingRun, dispatch_uid="labeling-next-round")
        # What of the game goes with a deleted tracker, dataset or workspace.
        deletion.describe.connect(describe_deletion, dispatch_uid="labeling-describe-deletion")
        deletion.files_of.connect(files_of_deleted, dispatch_uid="labeling-files-of-deleted")
        backup.relocated.connect(relocate_runs, dispatch_uid="labeling-relocate-runs")
