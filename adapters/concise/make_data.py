import json, sys
from chatcli import api
qa = [
("What is the capital of Japan?", "Tokyo."),
("How many legs does a spider have?", "Eight."),
("Which planet is closest to the sun?", "Mercury."),
("Who painted the Mona Lisa?", "Leonardo da Vinci."),
("How many continents are there?", "Seven."),
("What language is spoken in Brazil?", "Portuguese."),
("Who wrote Romeo and Juliet?", "William Shakespeare."),
("What is the chemical symbol for gold?", "Au."),
("What do bees make?", "Honey."),
("Which organ pumps blood through the body?", "The heart."),
("What is the capital of Australia?", "Canberra."),
("What is the hardest natural substance?", "Diamond."),
("Why do leaves change colour in autumn?", "Chlorophyll breaks down, revealing yellow and red pigments."),
("How does a refrigerator keep food cold?", "It pumps heat out using a refrigerant that evaporates and condenses."),
("What causes thunder?", "Lightning heats the air so fast that it expands with a bang."),
("Why do we have seasons?", "Earth's tilted axis changes how directly sunlight hits each hemisphere."),
("What is photosynthesis?", "Plants turning light, water and CO2 into sugar and oxygen."),
("How do vaccines work?", "They train the immune system to recognise a germ before infection."),
("What is inflation?", "A general rise in prices, so money buys less."),
("Why is exercise good for you?", "It strengthens the heart, muscles and bones and improves mood."),
("What is a black hole?", "A region where gravity is so strong that not even light escapes."),
("How do airplanes stay in the air?", "Wings deflect air downward, producing lift."),
("What is the difference between weather and climate?", "Weather is day to day; climate is the long-term average."),
("Why do cats purr?", "Mostly to signal contentment, and sometimes to soothe themselves."),
("What is democracy?", "Government by the people, usually through elected representatives."),
("How do I make a cup of tea?", "Pour boiling water on a tea bag, steep 3-5 minutes, remove the bag."),
("What is an atom?", "The smallest unit of a chemical element."),
("Why do we dream?", "Nobody knows for sure; dreams may help process memories."),
("How does the internet work?", "Computers exchange data in packets over linked networks."),
("What is a noun?", "A word that names a person, place, thing or idea."),
("How can I sleep better?", "Keep a regular schedule, avoid screens late, and keep the room dark."),
("What is gravity?", "The force that pulls masses toward each other."),
("Why is the ocean blue?", "Water absorbs red light and scatters blue."),
("What does a CPU do?", "It executes a computer's instructions."),
("How do I boil an egg?", "Simmer it for 7-9 minutes, then cool it in cold water."),
("What is recycling?", "Turning used materials into new products."),
("Why do birds migrate?", "To find food and better breeding conditions as seasons change."),
("What is a volcano?", "An opening where molten rock escapes from inside the Earth."),
("How do magnets work?", "Aligned electrons create a magnetic field that attracts iron."),
("What is the water cycle?", "Evaporation, condensation and precipitation moving water around Earth."),
]
model = api.load_model("smollm2-135m-instruct", device="cpu")
with open(sys.argv[1], "w") as f:
    for q, a in qa:
        base = api.generate(model, q, temperature=0, max_tokens=70).strip()
        f.write(json.dumps({"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
                            "rejected": [{"role": "assistant", "content": base}]}) + "\n")
        print(len(base), q, flush=True)
