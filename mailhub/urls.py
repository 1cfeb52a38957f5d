from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from mailhub.web.leads_cases.urls import case_urlpatterns, lead_urlpatterns

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="emails:list", permanent=False)),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("emails/", include("mailhub.web.emails.urls")),
    path("emails/", include("mailhub.web.answers.urls")),
    path("leads/", include((lead_urlpatterns, "leads"))),
    path("cases/", include((case_urlpatterns, "cases"))),
    path("admin/", admin.site.urls),
]
