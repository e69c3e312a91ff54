import factory

from notifications.models import CategoryKind, Product, Site, SiteSecret
from notifications.services import public_key_new, secret_key_new

DEMO_ORIGIN = "http://127.0.0.1:8000"


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Store {n}")
    public_key = factory.LazyFunction(public_key_new)
    allowed_origins = DEMO_ORIGIN

    @factory.post_generation
    def secret(self, create, extracted, **kwargs):
        if create:
            SiteSecret.objects.create(site=self, secret=extracted or secret_key_new())


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    site = factory.SubFactory(SiteFactory)
    sku = factory.Sequence(lambda n: f"sku-{n}")
    name = factory.Sequence(lambda n: f"Product {n}")
    category = "Design & Art"
    category_kind = CategoryKind.SELF_EXPRESSION
