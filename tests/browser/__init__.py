"""Tests in the real Chromium (Debian ``chromium``) through Playwright."""
