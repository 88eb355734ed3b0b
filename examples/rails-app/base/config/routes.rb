Rails.application.routes.draw do
  # Liveness, as Rails 7.1's built-in /up: 200 once the app has booted, no database query.
  get "up", to: "health#up"
  # Readiness for the deploy host: database reachable and no migration pending.
  get "health", to: "health#show"

  resources :users, only: %i[index create]
end
