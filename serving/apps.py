from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Serving and API access"

    def ready(self) -> None:
        from labeling.models import TrainingRun
        from serving.models import ApiKey, ModelVersion
        from serving.services import publish_after_training
        from trackers import generation
        from trackers.work import work_finished

        generation.watch(ApiKey, ModelVersion, m2m=(ApiKey.trackers.through,))

        work_finished.connect(
            publish_after_training, sender=TrainingRun, dispatch_uid="serving-publish-version"
        )
