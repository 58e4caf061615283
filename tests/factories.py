from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from trackers.models import Dataset, Document, Membership, Role, Segment, Workspace


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery")


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    workspace = factory.SubFactory(WorkspaceFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.OWNER


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    workspace = factory.SubFactory(WorkspaceFactory)
    name = factory.Sequence(lambda n: f"Dataset {n}")


class DocumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Document

    dataset = factory.SubFactory(DatasetFactory)
    title = factory.Sequence(lambda n: f"Call {n}")
    kind = "call"


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    document = factory.SubFactory(DocumentFactory)
    dataset = factory.SelfAttribute("document.dataset")
    position = factory.Sequence(lambda n: n)
    text = factory.Sequence(lambda n: f"segment number {n}")
    text_hash = factory.LazyAttribute(lambda s: __import__("hashlib").sha1(s.text.encode()).hexdigest())
