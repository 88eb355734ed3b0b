# For running the app by hand (`bin/rails server`); the deploy host uses production.
Rails.application.configure do
  config.cache_classes = false
  config.eager_load = false
  config.consider_all_requests_local = true
  config.active_support.deprecation = :log
  # Rails' default here answers every request with an error page while a migration is pending;
  # /health reports pending migrations itself, so it must keep answering.
  config.active_record.migration_error = false
end
