from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling and training"

    def ready(self) -> None:
        from labeling.models import TrainingRun
        from labeling.services import after_training_failed
        from trackers.work import work_failed

        work_failed.connect(after_training_failed, sender=TrainingRun, dispatch_uid="labeling-next-round")
