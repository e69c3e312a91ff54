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
    # A neutral product: the default segment ("Everyone else", moderate policy). Tests of the
    # self-expression and utilitarian segments set these.
    category = ""
    category_kind = CategoryKind.OTHER


def site_policy_set(site, *, segment_name="Everyone", **fields):
    """Give `site` one default segment under a policy with `fields` (a store's admin edit)."""
    from notifications.models import PolicyConfig, SegmentConfig
    from notifications.services import policy_save

    policy = policy_save(policy=PolicyConfig(site=site, name=f"{segment_name} policy", **fields))
    SegmentConfig.objects.create(site=site, name=segment_name, is_default=True, policy=policy)
    return policy
