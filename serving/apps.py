from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    verbose_name = "Serving and API access"

    def ready(self) -> None:
        from labeling import progress
        from labeling.models import TrainingRun
        from serving import matches
        from serving.keys import services as keys
        from serving.keys.services import revoke_keys_of_removed_member
        from serving.live import services as live
        from serving.models import ApiKey, LiveKeeping, ModelVersion, ScoringJob, WebhookEndpoint
        from serving.scoring.services import score_imported
        from serving.versions import services as versions
        from serving.versions.services import live_for_pages, publish_after_training
        from serving.webhooks import fanout
        from serving.webhooks import services as webhooks
        from trackers import backup, deletion, generation, members
        from trackers.models import Job, Membership
        from trackers.work import work_finished

        generation.watch(ApiKey, LiveKeeping, ModelVersion, WebhookEndpoint, m2m=(ApiKey.trackers.through,))
        # What a live tracker scored is kept as its owner chose (nothing, by default).
        matches.scored.connect(live.keep_scored, sender=ModelVersion, dispatch_uid="serving-keep-live-texts")
        # A member taken out of a workspace takes their API keys there with them.
        members.member_removed.connect(
            revoke_keys_of_removed_member, sender=Membership, dispatch_uid="serving-revoke-removed-keys"
        )
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
        # What of serving goes with a deleted tracker, dataset or workspace, and what may not go.
        deletion.describe.connect(versions.describe_deletion, dispatch_uid="serving-versions-describe")
        deletion.describe.connect(keys.describe_deletion, dispatch_uid="serving-keys-describe")
        deletion.describe.connect(webhooks.describe_deletion, dispatch_uid="serving-webhooks-describe")
        deletion.refuse.connect(versions.refuse_deletion, dispatch_uid="serving-versions-refuse")
        deletion.files_of.connect(versions.files_of_deleted, dispatch_uid="serving-versions-files")
        deletion.deleting.connect(
            keys.revoke_keys_left_without_trackers, dispatch_uid="serving-keys-stranded"
        )
        backup.relocated.connect(versions.relocate_versions, dispatch_uid="serving-relocate-versions")
