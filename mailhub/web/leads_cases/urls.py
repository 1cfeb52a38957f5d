"""Leads and cases: two URL namespaces, "leads" and "cases" (mailhub/urls.py includes each;
`Lead.get_absolute_url` and `Case.get_absolute_url` reverse "leads:detail" and "cases:detail")."""

from django.urls import path

import mailhub.web.converters  # noqa: F401 - registers <id:...>, the converter of every id

from . import views

lead_urlpatterns = [
    path("", views.lead_list_view, name="list"),
    path("<id:pk>/", views.lead_detail, name="detail"),
]

case_urlpatterns = [
    path("", views.case_list_view, name="list"),
    path("<id:pk>/", views.case_detail, name="detail"),
    path("<id:pk>/update/", views.case_update_view, name="update"),
    path("<id:pk>/notes/", views.case_note_add_view, name="note_add"),
]
