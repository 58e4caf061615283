from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Serving and API access"

    def ready(self) -> None:
        from labeling import progress
        from labeling.models import TrainingRun
        from serving import matches
        from serving.models import ApiKey, ModelVersion, ScoringJob, WebhookEndpoint
        from serving.scoring.services import score_imported
        from serving.versions.services import live_for_pages, publish_after_training
        from serving.webhooks import fanout
        from trackers import generation
        from trackers.models import Job
        from trackers.work import work_finished

        generation.watch(ApiKey, ModelVersion, WebhookEndpoint, m2m=(ApiKey.trackers.through,))
        # Imported documents, once embedded, are scored by every live tracker (and alerted).
        work_finished.connect(score_imported, sender=Job, dispatch_uid="serving-score-imported")

        work_finished.connect(
            publish_after_training, sender=TrainingRun, dispatch_uid="serving-publish-version"
        )
        # The tracker's pages and answers show its live version's numbers, at its threshold in use.
        progress.asked_live.connect(live_for_pages, dispatch_uid="serving-live-for-pages")
        # Webhook alerts subscribe to the matches that prediction and bulk scoring announce.
        matches.found.connect(fanout.on_found, sender=ModelVersion, dispatch_uid="serving-alert-matches")
        matches.job_scored.connect(
            fanout.on_job_scored, sender=ScoringJob, dispatch_uid="serving-alert-documents"
        )
