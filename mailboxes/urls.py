"""My Emails (namespace "emails"; `Email.get_absolute_url` reverses "emails:detail")."""

from django.urls import path

from . import views

app_name = "emails"

urlpatterns = [
    path("", views.email_list, name="list"),
    path("view/", views.email_view_select, name="select_view"),
    path("<int:pk>/", views.email_detail, name="detail"),
    path("<int:pk>/body.html", views.email_body_html, name="body_html"),
    path("<int:pk>/attachments/<int:attachment_pk>/", views.attachment_download, name="attachment"),
    path("<int:pk>/inline/<int:attachment_pk>/", views.email_inline_image, name="inline_image"),
    path("<int:pk>/convert-to-case/", views.email_convert_to_case_view, name="convert_to_case"),
    path("<int:pk>/convert-to-lead/", views.email_convert_to_lead_view, name="convert_to_lead"),
]
