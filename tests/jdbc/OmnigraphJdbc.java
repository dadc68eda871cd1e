// What a JDBC application does with the extension's foreign tables:
// metadata (getTables, getColumns), prepared statements with parameters,
// dates, timestamps, arrays and numeric values, and a write in a
// transaction. Run as a single-file program (Java 17):
//   java -cp /usr/share/java/postgresql.jar OmnigraphJdbc.java URL SCHEMA
// Exits non-zero, with the reason, on the first wrong answer.
import java.math.BigDecimal;
import java.sql.*;
import java.util.*;

public class OmnigraphJdbc {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], schema = args[1];
        try (Connection c = DriverManager.getConnection(url)) {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, schema, "%", new String[] {"FOREIGN TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            Collections.sort(tables);
            check(tables.equals(List.of("item", "link")), "getTables: " + tables);
            Map<String, String> cols = new LinkedHashMap<>();
            try (ResultSet rs = md.getColumns(null, schema, "item", "%")) {
                while (rs.next()) cols.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
            }
            check("text".equals(cols.get("k")), "k type: " + cols);
            check("int4".equals(cols.get("small")), "small type: " + cols);
            check("numeric".equals(cols.get("huge")), "huge type: " + cols);
            check("_text".equals(cols.get("words")), "words type: " + cols);
            check("timestamptz".equals(cols.get("moment")), "moment type: " + cols);

            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT k, small, huge, day, moment, words FROM " + schema + ".item WHERE small > ? AND day >= ? ORDER BY k")) {
                for (int round = 0; round < 7; round++) { // past the driver's prepareThreshold
                    ps.setInt(1, 0);
                    ps.setDate(2, java.sql.Date.valueOf("2000-01-01"));
                    List<String> keys = new ArrayList<>();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            keys.add(rs.getString(1));
                            if (rs.getString(1).equals("full")) {
                                check(rs.getInt(2) == 7, "small");
                                check(rs.getBigDecimal(3).equals(new BigDecimal("18446744073709551615")), "numeric: " + rs.getBigDecimal(3));
                                check(rs.getDate(4).toString().equals("2024-02-29"), "date: " + rs.getDate(4));
                                check(rs.getTimestamp(5).toInstant().toString().equals("2024-02-29T23:59:59.123456Z"), "timestamp: " + rs.getTimestamp(5).toInstant());
                                String[] words = (String[]) rs.getArray(6).getArray();
                                check(Arrays.equals(words, new String[] {"a", "ünïcode"}), "array: " + Arrays.toString(words));
                            }
                        }
                    }
                    check(keys.equals(List.of("full", "other")), "rows: " + keys);
                }
            }
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement(
                    "INSERT INTO " + schema + ".item (k, small, day, words) VALUES (?, ?, ?, ?)")) {
                ins.setString(1, "from-jdbc");
                ins.setInt(2, 3);
                ins.setDate(3, java.sql.Date.valueOf("2001-02-03"));
                ins.setArray(4, c.createArrayOf("text", new String[] {"x", "y"}));
                check(ins.executeUpdate() == 1, "insert count");
            }
            c.commit();
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT day, words[2] FROM " + schema + ".item WHERE k = 'from-jdbc'")) {
                check(rs.next(), "inserted row");
                check(rs.getDate(1).toString().equals("2001-02-03"), "inserted date");
                check(rs.getString(2).equals("y"), "inserted array");
            }
            c.commit();
        }
        System.out.println("jdbc ok");
    }
}
