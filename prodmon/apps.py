from django.apps import AppConfig


class ProdmonConfig(AppConfig):
    name = "prodmon"
    default_auto_field = "django.db.models.BigAutoField"
