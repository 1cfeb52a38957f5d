"""Leads and cases: two URL namespaces, "leads" and "cases" (mailhub/urls.py includes each;
`Lead.get_absolute_url` and `Case.get_absolute_url` reverse "leads:detail" and "cases:detail")."""

from django.urls import path

from . import views

lead_urlpatterns = [
    path("", views.lead_list_view, name="list"),
    path("<int:pk>/", views.lead_detail, name="detail"),
]

case_urlpatterns = [
    path("", views.case_list_view, name="list"),
    path("<int:pk>/", views.case_detail, name="detail"),
    path("<int:pk>/update/", views.case_update_view, name="update"),
]
