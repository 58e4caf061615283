from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Serving and API access"

    def ready(self) -> None:
        from labeling.models import TrainingRun
        from serving.services import publish_after_training
        from trackers.work import work_finished

        work_finished.connect(
            publish_after_training, sender=TrainingRun, dispatch_uid="serving-publish-version"
        )
