// `omnigraph serve` through pgjdbc (Debian's libpostgresql-jdbc-java):
// metadata (getTables, getColumns, getPrimaryKeys, getImportedKeys,
// getExportedKeys), prepared statements with parameters,
// a fetch size smaller than the result (portal suspension), and a
// transaction committed with setAutoCommit(false).
// Run: java -cp postgresql.jar ServeJdbc.java <jdbc url>
import java.sql.*;
import java.util.*;

public class ServeJdbc {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, null, "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            Collections.sort(tables);
            check(tables.equals(List.of("company", "knows", "person", "works_at")), "tables " + tables);
            Map<String, String> cols = new LinkedHashMap<>();
            try (ResultSet rs = md.getColumns(null, null, "person", null)) {
                while (rs.next()) cols.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
            }
            check(cols.keySet().containsAll(List.of("id", "name", "age", "joined_on", "score")), "columns " + cols);
            check("int4".equals(cols.get("age")), "age type " + cols.get("age"));
            check("_text".equals(cols.get("tags")), "tags type " + cols.get("tags"));
            try (ResultSet rs = md.getColumns(null, null, "works_at", "started_at")) {
                check(rs.next() && "timestamptz".equals(rs.getString("TYPE_NAME")), "started_at type");
            }

            // Keys, as BI tools read them to draw joins: `id` is every
            // table's primary key, an edge's src/dst refer to its endpoints.
            List<String> pk = new ArrayList<>();
            try (ResultSet rs = md.getPrimaryKeys(null, null, "person")) {
                while (rs.next()) pk.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("PK_NAME") + ":" + rs.getInt("KEY_SEQ"));
            }
            check(pk.equals(List.of("id:person_pkey:1")), "primary key " + pk);
            try (ResultSet rs = md.getPrimaryKeys(null, null, "nothing")) {
                check(!rs.next(), "a key for an unknown table");
            }
            List<String> imported = new ArrayList<>();
            try (ResultSet rs = md.getImportedKeys(null, "public", "works_at")) {
                while (rs.next()) {
                    imported.add(rs.getString("FKCOLUMN_NAME") + "->" + rs.getString("PKTABLE_NAME") + "."
                        + rs.getString("PKCOLUMN_NAME") + ":" + rs.getInt("DELETE_RULE"));
                }
            }
            int cascade = DatabaseMetaData.importedKeyCascade;
            check(imported.equals(List.of("dst->company.id:" + cascade, "src->person.id:" + cascade)), "imported keys " + imported);
            List<String> exported = new ArrayList<>();
            try (ResultSet rs = md.getExportedKeys(null, null, "company")) {
                while (rs.next()) exported.add(rs.getString("FKTABLE_NAME") + "." + rs.getString("FKCOLUMN_NAME"));
            }
            check(exported.equals(List.of("works_at.dst")), "exported keys " + exported);
            List<String> indexes = new ArrayList<>();
            try (ResultSet rs = md.getIndexInfo(null, null, "knows", true, false)) {
                while (rs.next()) indexes.add(rs.getString("INDEX_NAME") + ":" + rs.getString("COLUMN_NAME") + ":" + rs.getBoolean("NON_UNIQUE"));
            }
            check(indexes.equals(List.of("knows_pkey:id:false")), "indexes " + indexes);

            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, age, joined_on, score FROM person WHERE age >= ? AND status = ? ORDER BY id")) {
                ps.setInt(1, 26);
                ps.setString(2, "active");
                for (int run = 0; run < 6; run++) { // pgjdbc switches to a named statement at the 5th
                    List<String> ids = new ArrayList<>();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            ids.add(rs.getString(1));
                            if (rs.getString(1).equals("alice")) {
                                check(rs.getInt(2) == 30, "age");
                                check(rs.getDate(3).toString().equals("2021-03-04"), "date " + rs.getDate(3));
                                check(rs.getDouble(4) == 9.5, "score");
                            }
                        }
                    }
                    check(ids.equals(List.of("alice", "charlie")), "ids " + ids);
                }
            }

            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement(
                    "INSERT INTO person (slug, name, status, age) VALUES (?, ?, ?, ?)")) {
                for (int i = 0; i < 5; i++) {
                    ins.setString(1, "j" + i);
                    ins.setString(2, "Jay " + i);
                    ins.setString(3, "active");
                    ins.setInt(4, 40 + i);
                    check(ins.executeUpdate() == 1, "insert count");
                }
            }
            c.commit();
            try (Statement st = c.createStatement()) {
                st.setFetchSize(2); // rows arrive two at a time (Execute with max_rows)
                int n = 0;
                try (ResultSet rs = st.executeQuery("SELECT id FROM person WHERE age >= 40 ORDER BY id")) {
                    while (rs.next()) n++;
                }
                check(n == 5, "fetched " + n);
            }
            c.rollback();
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT version()")) {
                rs.next();
                check(rs.getString(1).startsWith("PostgreSQL 15"), "version " + rs.getString(1));
            }
            c.commit();
        }
        System.out.println("jdbc ok");
    }
}
