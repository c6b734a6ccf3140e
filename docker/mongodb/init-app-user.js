// First start of the MongoDB volume only (run by the image's entrypoint as the root user): the
// platform's own user, allowed to read and write its one database and nothing else.
const database = process.env.MONGO_APP_DATABASE;
const user = process.env.MONGO_APP_USER;
const password = process.env.MONGO_APP_PASSWORD;
if (!database || !user || !password) {
  throw new Error("MONGO_APP_DATABASE, MONGO_APP_USER and MONGO_APP_PASSWORD must be set");
}
db.getSiblingDB(database).createUser({
  user: user,
  pwd: password,
  roles: [{ role: "readWrite", db: database }],
});
