// Appends one sio-relay entry with Jedis 5: the clients in room "user:42" of namespace "/"
// receive `order:shipped` with one argument, {"orderId":"A-1001","carrier":"UPS"}.
//
//   Java 11 or later runs it from source, with Jedis 5 and its dependencies on the classpath:
//   e.g. `mvn dependency:copy-dependencies -DoutputDirectory=lib` in a project that depends on
//   redis.clients:jedis:5.2.0, then  java -cp 'lib/*' Produce.java
//   (REDIS_URL, STREAM override the defaults)
//
// NOT run by sio-relay's tests: the machines they run on cannot reach Maven Central (Java is
// there, Jedis is not).
//
// Field values are strings: build JSON arguments with your JSON library (Jackson, Gson); the
// literal below is already JSON. maxLen(...).approximateTrimming() caps the stream; keep it far
// above what the relay may have to catch up on.
import java.util.LinkedHashMap;
import java.util.Map;

import redis.clients.jedis.JedisPooled;
import redis.clients.jedis.StreamEntryID;
import redis.clients.jedis.params.XAddParams;

public class Produce {
    public static void main(String[] args) {
        String url = System.getenv().getOrDefault("REDIS_URL", "redis://127.0.0.1:6379");
        String stream = System.getenv().getOrDefault("STREAM", "sio-relay");
        Map<String, String> fields = new LinkedHashMap<>();
        fields.put("room", "user:42");
        fields.put("event", "order:shipped");
        fields.put("data", "{\"orderId\":\"A-1001\",\"carrier\":\"UPS\"}");
        try (JedisPooled jedis = new JedisPooled(url)) {
            StreamEntryID id = jedis.xadd(stream,
                XAddParams.xAddParams().maxLen(1_000_000).approximateTrimming(), fields);
            System.out.println(id);
        }
    }
}
