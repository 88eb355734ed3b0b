class UsersController < ApplicationController
  FIELDS = %i[id email name nickname].freeze

  def index
    render json: User.order(:id).as_json(only: FIELDS)
  end

  def create
    user = User.create!(params.require(:user).permit(:email, :name, :nickname))
    render status: :created, json: user.as_json(only: FIELDS)
  end
end
