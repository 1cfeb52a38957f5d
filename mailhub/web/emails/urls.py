"""My Emails (namespace "emails"; `Email.get_absolute_url` reverses "emails:detail")."""

from django.urls import path

import mailhub.web.converters  # noqa: F401 - registers <id:...>, the converter of every id

from . import downloads, notes, views

app_name = "emails"

urlpatterns = [
    path("", views.email_list, name="list"),
    path("view/", views.email_view_select, name="select_view"),
    path("<id:pk>/", views.email_detail, name="detail"),
    path("<id:pk>/body.html", views.email_body_html, name="body_html"),
    path("<id:pk>/original.eml", downloads.email_original_download, name="original"),
    path("<id:pk>/attachments/<id:attachment_pk>/", downloads.attachment_download, name="attachment"),
    path("<id:pk>/inline/<id:attachment_pk>/", downloads.email_inline_image, name="inline_image"),
    path("<id:pk>/convert-to-case/", views.email_convert_to_case_view, name="convert_to_case"),
    path("<id:pk>/convert-to-lead/", views.email_convert_to_lead_view, name="convert_to_lead"),
    path("<id:pk>/notes/", notes.email_note_add, name="note_add"),
]
