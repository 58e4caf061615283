from django.apps import AppConfig


class TrackersConfig(AppConfig):
    name = "trackers"
    verbose_name = "Workspaces and corpus"

    def ready(self) -> None:
        from trackers import services
        from trackers.models import EmbedPart, Job
        from trackers.work import work_finished

        work_finished.connect(services.discard_upload, sender=Job, dispatch_uid="trackers-discard-upload")
        work_finished.connect(services.part_ended, sender=EmbedPart, dispatch_uid="trackers-part-ended")
