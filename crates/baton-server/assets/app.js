// baton
